/* The flow-matching schedules against the tables in ../shared/spec/models.md §2.5 (FLUX.1-dev, 28 steps
 * at 1024², mu from N = 4096) and §3.4 (Z-Image-Turbo, 8 steps, static shift 3), to the spec's 2e-6. */
#include <jansson.h>
#include <math.h>
#include <string.h>

#include "pipeline/scheduler.h"
#include "test_util.h"

static void test_flux_dynamic(void **state) {
    (void)state;
    static const double want[29] = {1.000000, 0.988409, 0.976222, 0.963394, 0.949873, 0.935599, 0.920509, 0.904531,
                                    0.887583, 0.869576, 0.850406, 0.829956, 0.808095, 0.784672, 0.759511, 0.732413,
                                    0.703145, 0.671435, 0.636964, 0.599357, 0.558163, 0.512844, 0.462748, 0.407078,
                                    0.344849, 0.274828, 0.195455, 0.104721, 0.0};
    json_t *cfg = json_loads("{\"_class_name\":\"FlowMatchEulerDiscreteScheduler\",\"num_train_timesteps\":1000,\"shift\":3.0,"
                             "\"use_dynamic_shifting\":true,\"base_shift\":0.5,\"max_shift\":1.15,\"base_image_seq_len\":256,"
                             "\"max_image_seq_len\":4096}",
                             0, NULL);
    qd_flow_match_config c;
    assert_int_equal(qd_flow_match_config_parse("scheduler_config.json", cfg, &c), QD_OK);
    double mu = qd_flow_match_mu(&c, 4096);
    assert_true(fabs(mu - 1.15) < 1e-12);
    assert_true(fabs(exp(mu) - 3.1582) < 1e-4);
    qd_flow_match_schedule s;
    assert_int_equal(qd_flow_match_schedule_make(&c, 28, mu, &s), QD_OK);
    for (int i = 0; i <= 28; i++) {
        if (fabs(s.sigmas[i] - want[i]) > 2e-6) fail_msg("sigma[%d] = %.7f, the spec says %.6f", i, s.sigmas[i], want[i]);
    }
    /* timesteps = σ·1000 */
    assert_true(fabs(s.timesteps[1] - 988.409) < 2e-3);
    qd_flow_match_schedule_free(&s);
    json_decref(cfg);
}

static void test_zimage_static(void **state) {
    (void)state;
    static const double want[9] = {1.000000, 0.954545, 0.900000, 0.833333, 0.750000, 0.642857, 0.500000, 0.300000, 0.0};
    json_t *cfg = json_loads("{\"num_train_timesteps\":1000,\"shift\":3.0,\"use_dynamic_shifting\":false}", 0, NULL);
    qd_flow_match_config c;
    assert_int_equal(qd_flow_match_config_parse("scheduler_config.json", cfg, &c), QD_OK);
    qd_flow_match_schedule s;
    assert_int_equal(qd_flow_match_schedule_make(&c, 8, 0.0, &s), QD_OK);
    for (int i = 0; i <= 8; i++) {
        if (fabs(s.sigmas[i] - want[i]) > 2e-6) fail_msg("sigma[%d] = %.7f, the spec says %.6f", i, s.sigmas[i], want[i]);
    }
    /* the Z-Image model sees 1 − σ: 0, 0.045455, 0.1, … (§3.4) */
    assert_true(fabs((1.0 - s.sigmas[1]) - 0.045455) < 2e-6);
    /* one Euler step moves x by (σ1 − σ0)·v */
    float x[3] = {1.0f, -2.0f, 0.5f}, v[3] = {0.25f, 1.0f, -4.0f};
    qd_flow_match_step(&s, 0, v, x, 3);
    float dt = s.sigmas[1] - s.sigmas[0];
    assert_true(x[0] == 1.0f + dt * 0.25f && x[1] == -2.0f + dt * 1.0f && x[2] == 0.5f + dt * -4.0f);
    qd_flow_match_schedule_free(&s);
    json_decref(cfg);
}

static void test_bad_config(void **state) {
    (void)state;
    json_t *cfg = json_loads("{\"shift\":\"three\"}", 0, NULL);
    qd_flow_match_config c;
    assert_int_equal(qd_flow_match_config_parse("scheduler/scheduler_config.json", cfg, &c), QD_EFORMAT);
    assert_non_null(strstr(qd_last_error(), "scheduler/scheduler_config.json: 'shift' must be a number"));
    json_decref(cfg);
    qd_flow_match_config_init(&c);
    qd_flow_match_schedule s;
    assert_int_equal(qd_flow_match_schedule_make(&c, 0, 0, &s), QD_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_flux_dynamic), cmocka_unit_test(test_zimage_static),
                                       cmocka_unit_test(test_bad_config)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
