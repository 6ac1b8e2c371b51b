#include "scene_check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

const char *const qs_color_names[QS_COLORS] = {"red", "green", "blue", "yellow", "purple", "white", "black", "cyan"};
static const float palette[QS_COLORS][3] = {{220, 40, 40},  {40, 170, 60},   {40, 80, 220}, {240, 210, 40},
                                            {140, 60, 190}, {240, 240, 240}, {25, 25, 25},  {40, 200, 210}};
const char *const qs_shape_names[QS_SHAPES] = {"circle", "square", "triangle", "diamond"};
const char *const qs_size_names[QS_SIZES] = {"small", "large"};
static const float half_extent[QS_SIZES] = {11.0f, 19.0f}; /* pixels at 128×128 */
const char *const qs_position_names[QS_POSITIONS] = {"top left", "top",         "top right", "left",        "center",
                                                     "right",    "bottom left", "bottom",    "bottom right"};
static const float cell[3] = {0.22f, 0.5f, 0.78f}; /* cell centres, fractions of the side */

#define FG_DIST 60.0f
#define MIN_AREA 40

static int lookup(const char *const *names, int n, const char *w, size_t len) {
    for (int i = 0; i < n; i++)
        if (strlen(names[i]) == len && !strncmp(names[i], w, len)) return i;
    return -1;
}

/* "a SIZE COLOR SHAPE at the POSITION" */
static int parse_object(const char *p, size_t len, qs_object *o) {
    char buf[160];
    if (len >= sizeof buf) return -1;
    memcpy(buf, p, len), buf[len] = '\0';
    char size[16], color[16], shape[16];
    int used = 0;
    if (sscanf(buf, "a %15s %15s %15s at the %n", size, color, shape, &used) != 3 || !used) return -1;
    o->size = lookup(qs_size_names, QS_SIZES, size, strlen(size));
    o->color = lookup(qs_color_names, QS_COLORS, color, strlen(color));
    o->shape = lookup(qs_shape_names, QS_SHAPES, shape, strlen(shape));
    o->position = lookup(qs_position_names, QS_POSITIONS, buf + used, strlen(buf + used));
    return o->size < 0 || o->color < 0 || o->shape < 0 || o->position < 0 ? -1 : 0;
}

int qs_parse(const char *text, qs_scene *s, char *err, size_t n) {
    memset(s, 0, sizeof *s);
    const char *tail = " background", *on = strstr(text, " on a ");
    size_t L = strlen(text), tl = strlen(tail);
    if (!on || L < tl || strcmp(text + L - tl, tail)) {
        snprintf(err, n, "not a scene caption: \"%s\"", text);
        return -1;
    }
    const char *last_on = on;
    while ((on = strstr(on + 1, " on a "))) last_on = on;
    const char *bg = last_on + 6;
    s->background = lookup(qs_color_names, QS_COLORS, bg, (size_t)(text + L - tl - bg));
    if (s->background < 0) {
        snprintf(err, n, "unknown background colour in \"%s\"", text);
        return -1;
    }
    const char *head = text, *and = strstr(text, " and ");
    if (and && and < last_on) {
        s->n = 2;
        if (parse_object(head, (size_t)(and - head), &s->obj[0]) || parse_object(and + 5, (size_t)(last_on - and - 5), &s->obj[1])) {
            snprintf(err, n, "not two object phrases: \"%s\"", text);
            return -1;
        }
    } else {
        s->n = 1;
        if (parse_object(head, (size_t)(last_on - head), &s->obj[0])) {
            snprintf(err, n, "not an object phrase: \"%s\"", text);
            return -1;
        }
    }
    return 0;
}

void qs_caption(const qs_scene *s, char *out, size_t n) {
    size_t k = 0;
    for (int i = 0; i < s->n; i++) {
        const qs_object *o = &s->obj[i];
        k += (size_t)snprintf(out + k, k < n ? n - k : 0, "%sa %s %s %s at the %s", i ? " and " : "", qs_size_names[o->size],
                              qs_color_names[o->color], qs_shape_names[o->shape], qs_position_names[o->position]);
    }
    snprintf(out + k, k < n ? n - k : 0, " on a %s background", qs_color_names[s->background]);
}

bool qs_compatible(const qs_object *a, const qs_object *b) {
    int ra = a->position / 3, ca = a->position % 3, rb = b->position / 3, cb = b->position % 3;
    if (ra == rb && ca == cb) return false;
    int cheb = abs(ra - rb) > abs(ca - cb) ? abs(ra - rb) : abs(ca - cb);
    return !((a->size == 1 || b->size == 1) && cheb < 2);
}

static bool inside(int shape, float dx, float dy, float r) {
    switch (shape) {
    case 0: return dx * dx + dy * dy <= r * r;
    case 1: return fabsf(dx) <= r && fabsf(dy) <= r;
    case 2: return dy >= -r && dy <= r && fabsf(dx) <= (dy + r) / 2; /* apex up */
    default: return fabsf(dx) + fabsf(dy) <= r;
    }
}

void qs_render(const qs_scene *s, const float jitter[2][2], int res, uint8_t *rgb) {
    const int ss = 4;
    for (int y = 0; y < res; y++) {
        for (int x = 0; x < res; x++) {
            float acc[3] = {0, 0, 0};
            for (int sy = 0; sy < ss; sy++) {
                for (int sx = 0; sx < ss; sx++) {
                    float px = x + (sx + 0.5f) / ss, py = y + (sy + 0.5f) / ss;
                    const float *c = palette[s->background];
                    for (int i = 0; i < s->n; i++) {
                        const qs_object *o = &s->obj[i];
                        float cx = cell[o->position % 3] * res + (jitter ? jitter[i][0] : 0);
                        float cy = cell[o->position / 3] * res + (jitter ? jitter[i][1] : 0);
                        if (inside(o->shape, px - cx, py - cy, half_extent[o->size])) c = palette[o->color];
                    }
                    for (int k = 0; k < 3; k++) acc[k] += c[k];
                }
            }
            for (int k = 0; k < 3; k++) {
                float v = roundf(acc[k] / (ss * ss));
                rgb[((size_t)y * res + x) * 3 + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
}

static int nearest_color(const float c[3]) {
    int best = 0;
    float bd = INFINITY;
    for (int i = 0; i < QS_COLORS; i++) {
        float d = 0;
        for (int k = 0; k < 3; k++) d += (c[k] - palette[i][k]) * (c[k] - palette[i][k]);
        if (d < bd) bd = d, best = i;
    }
    return best;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* numpy's median: the middle value, or the mean of the two middle ones */
static float median(float *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_float);
    return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

typedef struct {
    int n;
    qs_object obj[8];
} seen;

static void describe(const uint8_t *rgb, int w, int h, int *background, seen *out) {
    out->n = 0;
    size_t nb = 0, cap = (size_t)(4 * 2 * (w + h));
    float *border[3];
    for (int k = 0; k < 3; k++) border[k] = malloc(sizeof(float) * cap);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            /* numpy's concatenation of the top 2 rows, bottom 2 rows, left 2 columns and right 2 columns:
               corner pixels count twice there, so they do here */
            int times = (y < 2 || y >= h - 2) + (x < 2) + (x >= w - 2);
            for (int t = 0; t < times; t++, nb++)
                for (int k = 0; k < 3; k++) border[k][nb] = rgb[((size_t)y * w + x) * 3 + k];
        }
    }
    float bg[3];
    for (int k = 0; k < 3; k++) bg[k] = median(border[k], nb), free(border[k]);
    *background = nearest_color(bg);

    size_t N = (size_t)w * h;
    uint8_t *mask = calloc(N, 1);
    int *label = calloc(N, sizeof *label), *stack = malloc(sizeof *stack * N), *members = malloc(sizeof *members * N);
    for (size_t i = 0; i < N; i++) {
        float d = 0;
        for (int k = 0; k < 3; k++) d += (rgb[i * 3 + k] - bg[k]) * (rgb[i * 3 + k] - bg[k]);
        mask[i] = sqrtf(d) > FG_DIST;
    }
    int next = 0;
    const float r_mid = sqrtf(half_extent[0] * half_extent[1]);
    for (size_t i0 = 0; i0 < N; i0++) {
        if (!mask[i0] || label[i0]) continue;
        int top = 0, m = 0;
        label[i0] = ++next;
        stack[top++] = (int)i0;
        while (top) {
            int i = stack[--top], y = i / w, x = i % w;
            members[m++] = i;
            const int nb4[4][2] = {{y - 1, x}, {y + 1, x}, {y, x - 1}, {y, x + 1}};
            for (int k = 0; k < 4; k++) {
                int ny = nb4[k][0], nx = nb4[k][1];
                if (ny < 0 || ny >= h || nx < 0 || nx >= w) continue;
                int j = ny * w + nx;
                if (mask[j] && !label[j]) label[j] = next, stack[top++] = j;
            }
        }
        if (m < MIN_AREA || out->n == 8) continue;
        int y0 = h, y1 = -1, x0 = w, x1 = -1;
        double sy = 0, sx = 0;
        float *ch[3];
        for (int k = 0; k < 3; k++) ch[k] = malloc(sizeof(float) * (size_t)m);
        for (int q = 0; q < m; q++) {
            int i = members[q], y = i / w, x = i % w;
            y0 = y < y0 ? y : y0, y1 = y > y1 ? y : y1, x0 = x < x0 ? x : x0, x1 = x > x1 ? x : x1;
            sy += y, sx += x;
            for (int k = 0; k < 3; k++) ch[k][q] = rgb[(size_t)i * 3 + k];
        }
        int bh = y1 - y0 + 1, bw = x1 - x0 + 1;
        double fill = (double)m / ((double)bh * bw), cy = sy / m, cx = sx / m, rel_cy = (cy - y0 + 0.5) / bh;
        qs_object *o = &out->obj[out->n++];
        o->shape = fill >= 0.88 ? 1 : fill >= 0.66 ? 0 : rel_cy > 0.58 ? 2 : 3;
        const double k_area[QS_SHAPES] = {M_PI / 4, 1.0, 0.5, 0.5};
        o->size = m > k_area[o->shape] * (2 * r_mid) * (2 * r_mid);
        double fx = cx / w, fy = cy / h;
        int col = fx < 0.36 ? 0 : fx > 0.64 ? 2 : 1, row = fy < 0.36 ? 0 : fy > 0.64 ? 2 : 1;
        o->position = row * 3 + col;
        float med[3];
        for (int k = 0; k < 3; k++) med[k] = median(ch[k], (size_t)m), free(ch[k]);
        o->color = nearest_color(med);
    }
    free(mask), free(label), free(stack), free(members);
}

static bool same(const qs_object *a, const qs_object *b) {
    return a->size == b->size && a->color == b->color && a->shape == b->shape && a->position == b->position;
}

bool qs_check(const uint8_t *rgb, int w, int h, const char *caption, char *why, size_t why_n) {
    char dummy[8];
    if (!why) why = dummy, why_n = sizeof dummy;
    qs_scene want;
    if (qs_parse(caption, &want, why, why_n)) return false;
    int bg;
    seen got;
    describe(rgb, w, h, &bg, &got);
    qs_scene saw = {.n = got.n < 2 ? got.n : 2, .background = bg};
    for (int i = 0; i < saw.n; i++) saw.obj[i] = got.obj[i];
    if (bg != want.background) {
        snprintf(why, why_n, "background %s", qs_color_names[bg]);
        return false;
    }
    if (got.n != want.n) {
        snprintf(why, why_n, "%d objects", got.n);
        return false;
    }
    bool ok = want.n == 1 ? same(&got.obj[0], &want.obj[0])
                          : (same(&got.obj[0], &want.obj[0]) && same(&got.obj[1], &want.obj[1])) ||
                                (same(&got.obj[1], &want.obj[0]) && same(&got.obj[0], &want.obj[1]));
    if (!ok) {
        char c[256];
        qs_caption(&saw, c, sizeof c);
        snprintf(why, why_n, "saw %s", c);
    }
    return ok;
}
