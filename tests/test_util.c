/* Helpers for the tests (see test_util.h). */
#define _XOPEN_SOURCE 700
#include "test_util.h"

#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "io/safetensors.h"

static void mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(buf, 0777);
            *p = '/';
        }
    }
    mkdir(buf, 0777);
}

char *qt_mkdtemp(const char *tag) {
    const char *base = getenv("QDIT_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    mkdirs(base);
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/qdit-%s-XXXXXX", base, tag);
    if (!mkdtemp(p)) fail_msg("mkdtemp %s: %s", p, strerror(errno));
    return p;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

void qt_rmtree(const char *path) { nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

char *qt_path(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", a, b);
    return p;
}

void qt_write_file(const char *path, const void *data, size_t n) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) { *slash = '\0'; mkdirs(dir); }
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot write %s: %s", path, strerror(errno));
    if (n && fwrite(data, 1, n, f) != n) fail_msg("short write %s", path);
    fclose(f);
}

void qt_write_text(const char *path, const char *text) { qt_write_file(path, text, strlen(text)); }

void *qt_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot read %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    if (sz && fread(buf, 1, (size_t)sz, f) != (size_t)sz) fail_msg("short read %s", path);
    buf[sz] = '\0';
    fclose(f);
    if (n) *n = (size_t)sz;
    return buf;
}

uint64_t qt_seed(void) {
    const char *env = getenv("QDIT_TEST_SEED");
    uint64_t s = env ? strtoull(env, NULL, 0) : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    if (s == 0) s = 0x9E3779B97F4A7C15ull;
    fprintf(stderr, "[ seed     ] QDIT_TEST_SEED=%llu\n", (unsigned long long)s);
    return s;
}

uint64_t qt_rand_u64(uint64_t *x) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

float qt_rand_uniform(uint64_t *state, float lo, float hi) {
    double u = (double)(qt_rand_u64(state) >> 11) / 9007199254740992.0;
    return (float)(lo + (hi - lo) * u);
}

static char *slurp_fd(int fd) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (n + 1024 > cap) buf = realloc(buf, cap *= 2);
        ssize_t r = read(fd, buf + n, cap - n - 1);
        if (r <= 0) break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return buf;
}

int qt_run_qdit(char **out, char **err, ...) {
    char *argv[64];
    int argc = 0;
    argv[argc++] = (char *)QDIT_BINARY;
    va_list ap;
    va_start(ap, err);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < 63;) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;

    char outp[] = "/tmp/qdit-out-XXXXXX", errp[] = "/tmp/qdit-err-XXXXXX";
    int ofd = mkstemp(outp), efd = mkstemp(errp);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(ofd, 1);
        dup2(efd, 2);
        alarm(60);
        execv(argv[0], argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    lseek(ofd, 0, SEEK_SET);
    lseek(efd, 0, SEEK_SET);
    char *o = slurp_fd(ofd), *e = slurp_fd(efd);
    close(ofd); close(efd);
    unlink(outp); unlink(errp);
    if (out) *out = o; else free(o);
    if (err) *err = e; else free(e);
    if (WIFSIGNALED(st)) return WTERMSIG(st) == SIGALRM ? -1 : 128 + WTERMSIG(st);
    return WEXITSTATUS(st);
}

void qt_write_raw_safetensors(const char *path, const char *header_json, const void *data, size_t n) {
    size_t hl = strlen(header_json);
    size_t total = 8 + hl + n;
    unsigned char *buf = malloc(total ? total : 1);
    uint64_t len = hl;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, header_json, hl);
    if (n) memcpy(buf + 8 + hl, data, n);
    qt_write_file(path, buf, total);
    free(buf);
}

/* ‖a − b‖ / ‖b‖, over the rows whose mask entry is nonzero when `mask` (I64 [B, L], rows = the
 * elements of a per mask entry) is given */
static double rel_l2(const char *a, const char *name_a, const char *b, const char *name_b, const char *mf, const char *mask_name) {
    qd_st_file *fa, *fb, *fm = NULL;
    if (qd_st_open(a, &fa)) fail_msg("%s: %s", a, qd_last_error());
    if (qd_st_open(b, &fb)) fail_msg("%s: %s", b, qd_last_error());
    if (mf && qd_st_open(mf, &fm)) fail_msg("%s: %s", mf, qd_last_error());
    const qd_st_tensor *ta = qd_st_find(fa, name_a), *tb = qd_st_find(fb, name_b), *tm = fm ? qd_st_find(fm, mask_name) : NULL;
    if (!ta) fail_msg("%s has no tensor %s", a, name_a);
    if (!tb) fail_msg("%s has no tensor %s", b, name_b);
    if (fm && !tm) fail_msg("%s has no tensor %s", mf, mask_name);
    assert_int_equal(ta->dtype, QD_DTYPE_F32);
    assert_int_equal(tb->dtype, QD_DTYPE_F32);
    assert_int_equal(ta->rank, tb->rank);
    for (int i = 0; i < ta->rank; i++) assert_int_equal(ta->shape[i], tb->shape[i]);
    const int64_t *mask = NULL;
    uint64_t per = 1;
    if (tm) {
        assert_int_equal(tm->dtype, QD_DTYPE_I64);
        assert_true(tm->rank <= ta->rank);
        for (int i = 0; i < tm->rank; i++) assert_int_equal(tm->shape[i], ta->shape[i]);
        mask = qd_st_data(fm, tm);
        per = ta->elements / tm->elements;
    }
    const float *x = qd_st_data(fa, ta), *y = qd_st_data(fb, tb);
    double num = 0, den = 0;
    for (uint64_t i = 0; i < ta->elements; i++) {
        if (mask && !mask[i / per]) continue;
        if (!isfinite(x[i])) fail_msg("%s: %s[%llu] is not finite", a, name_a, (unsigned long long)i);
        double d = (double)x[i] - y[i];
        num += d * d;
        den += (double)y[i] * y[i];
    }
    if (!(den > 0)) fail_msg("%s: reference %s is all zeros", b, name_b);
    qd_st_close(fa), qd_st_close(fb), qd_st_close(fm);
    return sqrt(num / den);
}

double qt_rel_l2(const char *a, const char *name_a, const char *b, const char *name_b) {
    return rel_l2(a, name_a, b, name_b, NULL, NULL);
}

double qt_rel_l2_masked(const char *a, const char *name_a, const char *b, const char *name_b, const char *mask_file,
                        const char *mask_name) {
    return rel_l2(a, name_a, b, name_b, mask_file, mask_name);
}

uint8_t *qt_read_png_rgb(const char *path, int *w, int *h, char **params) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: not written", path);
    png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p);
    if (setjmp(png_jmpbuf(p))) fail_msg("%s: libpng cannot read it", path);
    png_init_io(p, f);
    png_read_info(p, info);
    *w = (int)png_get_image_width(p, info), *h = (int)png_get_image_height(p, info);
    if (png_get_bit_depth(p, info) != 8 || png_get_color_type(p, info) != PNG_COLOR_TYPE_RGB) fail_msg("%s: not RGB8", path);
    uint8_t *rgb = malloc((size_t)*w * *h * 3);
    for (int y = 0; y < *h; y++) png_read_row(p, rgb + (size_t)y * *w * 3, NULL);
    png_read_end(p, info);
    if (params) {
        *params = NULL;
        png_textp text;
        int n = 0;
        png_get_text(p, info, &text, &n);
        for (int i = 0; i < n; i++)
            if (!strcmp(text[i].key, "parameters")) *params = strdup(text[i].text);
    }
    png_destroy_read_struct(&p, &info, NULL);
    fclose(f);
    return rgb;
}

qd_tensor qt_random_tensor(qd_backend *be, int rank, const int64_t *shape, uint64_t *state) {
    qd_tensor t;
    assert_int_equal(qd_tensor_new(be, &t, QD_DTYPE_F32, rank, shape), QD_OK);
    const int64_t n = qd_tensor_elements(&t);
    float *h = malloc(sizeof *h * (size_t)n);
    assert_non_null(h);
    for (int64_t i = 0; i < n; i++) h[i] = qt_rand_uniform(state, -1.0f, 1.0f);
    assert_int_equal(be->ops->upload(be, &t, h), QD_OK);
    free(h);
    return t;
}
