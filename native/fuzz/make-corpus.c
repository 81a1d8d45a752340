/* Writes the seed corpus of fuzz-map (native/fuzz/corpus/map/): maps made by
 * bm_map_create itself, some with bits set, and hand-edited edge cases of the
 * header.  Run once by hand; its output is committed:
 *
 *   cc -D_GNU_SOURCE -Inative/include -Inative/src native/fuzz/make-corpus.c \
 *      native/src/{dirtymap,bitmap,freeze,gate}.c -o /tmp/make-corpus
 *   /tmp/make-corpus native/fuzz/corpus/map
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

static const char *out;

static void
save (const char *name, const void *bytes, size_t size)
{
  char p[4096];
  FILE *f;

  snprintf (p, sizeof p, "%s/%s", out, name);
  f = fopen (p, "wb");
  if (f == NULL || fwrite (bytes, 1, size, f) != size || fclose (f) != 0) {
    perror (p);
    exit (1);
  }
}

/* Create a real map, optionally mark some blocks, return its bytes. */
static char *
made (uint64_t image_size, uint32_t block_size, int mark, size_t *size)
{
  char p[] = "/tmp/bm-corpus.XXXXXX";
  char path[64];
  bm_map *m;
  char *buf;
  FILE *f;

  if (mkdtemp (p) == NULL) { perror ("mkdtemp"); exit (1); }
  snprintf (path, sizeof path, "%s/m.map", p);
  m = bm_map_create (path, image_size, block_size);
  if (m == NULL) { fprintf (stderr, "%s\n", bm_last_error ()); exit (1); }
  if (mark && m->blocks > 0) {
    bm_mark_blocks (m, 0, 1);
    bm_mark_blocks (m, m->blocks - 1, 1);
    bm_mark_bytes (m, image_size / 3, block_size * 3);
    bm_gate_clear_blocks (m, 0, 0);
    uint64_t w = 0x5555555555555555ull;
    bm_gate_mark_words (m, 0, 1, &w);
  }
  bm_map_close (m);
  f = fopen (path, "rb");
  fseek (f, 0, SEEK_END);
  *size = (size_t) ftell (f);
  rewind (f);
  buf = malloc (*size);
  if (fread (buf, 1, *size, f) != *size) exit (1);
  fclose (f);
  unlink (path);
  rmdir (p);
  return buf;
}

int
main (int argc, char **argv)
{
  struct bm_header *h;
  size_t size;
  char *b;

  out = argc > 1 ? argv[1] : ".";

  b = made (0, 4096, 0, &size);           save ("valid-empty-image", b, size); free (b);
  b = made (1, 4096, 1, &size);           save ("valid-1-byte", b, size); free (b);
  b = made (1 << 20, 4096, 1, &size);     save ("valid-1MiB-4K-marked", b, size); free (b);
  b = made (3 << 20, 65536, 1, &size);    save ("valid-3MiB-64K-marked", b, size); free (b);
  b = made (12345678, 1 << 20, 1, &size); save ("valid-odd-size-1M-blocks", b, size); free (b);

  /* the smallest layout validate_header accepts: bitmaps packed after the header */
  b = made (64 * 4096, 4096, 1, &size);
  h = (struct bm_header *) b;
  h->gate_offset = h->dirty_offset + 8;
  save ("compact-layout", b, BM_HEADER_SIZE + 16);
  /* gate before dirty */
  h->gate_offset = BM_HEADER_SIZE;
  h->dirty_offset = BM_HEADER_SIZE + 8;
  save ("gate-before-dirty", b, BM_HEADER_SIZE + 16);
  /* gate bitmap inside the header (must be refused) */
  h->dirty_offset = BM_HEADER_SIZE;
  h->gate_offset = 0;
  save ("gate-in-header", b, BM_HEADER_SIZE + 8);
  h->gate_offset = BM_HEADER_SIZE + 8;
  /* overlapping bitmaps */
  h->gate_offset = BM_HEADER_SIZE;
  save ("overlap", b, BM_HEADER_SIZE + 16);
  h->gate_offset = BM_HEADER_SIZE + 8;
  /* wrong geometry, other byte order, version, block sizes */
  h->blocks = 65;
  save ("blocks-mismatch", b, BM_HEADER_SIZE + 16);
  h->blocks = 64;
  h->byte_order = __builtin_bswap32 (BM_BYTE_ORDER);
  save ("other-byte-order", b, BM_HEADER_SIZE + 16);
  h->byte_order = BM_BYTE_ORDER;
  h->version = 2;
  save ("version-2", b, BM_HEADER_SIZE + 16);
  h->version = BM_VERSION;
  h->block_size = 3000;
  save ("block-size-not-power", b, BM_HEADER_SIZE + 16);
  h->block_size = 4096;
  h->image_size = UINT64_MAX;
  save ("image-size-max", b, BM_HEADER_SIZE + 16);
  h->image_size = 64 * 4096;
  h->dirty_offset = UINT64_MAX - 7;
  save ("dirty-offset-max", b, BM_HEADER_SIZE + 16);
  h->dirty_offset = BM_HEADER_SIZE;
  /* truncated: header only, half a header, nothing */
  save ("truncated-bitmaps", b, BM_HEADER_SIZE + 8);
  save ("half-header", b, 100);
  save ("empty", b, 0);
  free (b);
  return 0;
}
