/* The scene world of qdit's embedded tiny model (tools/tiny-model/scenes.py is the trainer's copy; keep
 * the two in step): captions of one or two coloured shapes on a coloured background, a renderer, and the
 * checker that reads an image and decides whether it shows what its caption names.
 *
 *   scene  := object [" and " object] " on a " COLOR " background"
 *   object := "a " SIZE " " COLOR " " SHAPE " at the " POSITION
 *
 * The checker: background = per-channel median of the 2-pixel border; foreground = pixels farther than 60
 * (RGB) from it; 4-connected components of at least 40 pixels are the objects. Per object: colour = the
 * palette entry nearest its median colour; shape from the fill ratio of its bounding box (≥ 0.88 square,
 * ≥ 0.66 circle, else triangle when the centroid sits below 0.58 of the box height, else diamond); size =
 * large when its area passes that shape's area at the geometric mean of the two sizes' half-extents;
 * position = the third of the image its centroid falls in, per axis (cuts at 0.36 and 0.64). Accepted when
 * the background and every object (in either order) match. */
#ifndef QD_TEST_SCENE_CHECK_H
#define QD_TEST_SCENE_CHECK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { QS_COLORS = 8, QS_SHAPES = 4, QS_SIZES = 2, QS_POSITIONS = 9 };
extern const char *const qs_color_names[QS_COLORS];
extern const char *const qs_shape_names[QS_SHAPES];
extern const char *const qs_size_names[QS_SIZES];
extern const char *const qs_position_names[QS_POSITIONS];

typedef struct {
    int size, color, shape, position; /* indexes into the name tables */
} qs_object;

typedef struct {
    int n; /* 1 or 2 */
    qs_object obj[2];
    int background;
} qs_scene;

/* 0 and the scene, or -1 with why in err. */
int qs_parse(const char *text, qs_scene *s, char *err, size_t n);
void qs_caption(const qs_scene *s, char *out, size_t n);
/* Two objects may share a scene: different cells, and not adjacent when either is large. */
bool qs_compatible(const qs_object *a, const qs_object *b);
/* RGB8 [res, res, 3], 4× supersampled; jitter[i] moves object i by (dx, dy) pixels. */
void qs_render(const qs_scene *s, const float jitter[2][2], int res, uint8_t *rgb);
/* Does the RGB8 image [h, w, 3] show the caption's scene? why (if not NULL) gets the reason. */
bool qs_check(const uint8_t *rgb, int w, int h, const char *caption, char *why, size_t why_n);

#endif
