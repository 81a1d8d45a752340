/* libFuzzer harness for the dirty map's open path: the bytes of a map file,
 * as a local user who can write the map directory (or a damaged /dev/shm)
 * could leave them, go through the real bm_map_open (fstat, header read,
 * validate_header, mmap).  A map that opens is then read and changed a little
 * (info, counts, peek, take, mark, gate marks, cookie) and its layout checked
 * against the promises of dirtymap.h: both bitmaps inside the mapping, after
 * the header and apart from each other.
 *
 * Built with clang -fsanitize=fuzzer,address,undefined by native/CMakeLists.txt
 * (target fuzz-map); run by native/fuzz/run.sh (ctest "fuzz-map", bounded) and
 * `./build.sh fuzz` (long).  The map is written into a private directory
 * (mkdtemp, mode 0700) removed at exit.
 */
#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static char dir[64];
static char path[128];

static void
cleanup (void)
{
  unlink (path);
  rmdir (dir);
}

static void
die (const char *what)
{
  fprintf (stderr, "fuzz-map: %s: %s\n", what, strerror (errno));
  abort ();
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *tmp = getenv ("TMPDIR");

  snprintf (dir, sizeof dir, "%s/bm-fuzz-map.XXXXXX",
            tmp && *tmp && strlen (tmp) < 32 ? tmp : "/tmp");
  if (mkdtemp (dir) == NULL)
    die ("mkdtemp");
  snprintf (path, sizeof path, "%s/fuzz.map", dir);
  atexit (cleanup);
  return 0;
}

/* Layout promises for an open map: what the rest of the library indexes by. */
static void
check_layout (bm_map *map)
{
  const char *base = map->base;
  const char *end = base + map->length;
  const char *dirty = (const char *) map->dirty;
  const char *gate = (const char *) map->gate;
  uint64_t bytes = map->words * 8;

  if (map->words != map->blocks / 64 + (map->blocks % 64 != 0) ||
      map->blocks != map->image_size / map->block_size +
                     (map->image_size % map->block_size != 0) ||
      map->length < BM_HEADER_SIZE ||
      dirty < base + BM_HEADER_SIZE || gate < base + BM_HEADER_SIZE ||
      (uint64_t) (end - dirty) < bytes || (uint64_t) (end - gate) < bytes ||
      (dirty < gate + bytes && gate < dirty + bytes && bytes > 0)) {
    fprintf (stderr, "fuzz-map: opened a map with a bad layout: length %zu, "
             "dirty at %td, gate at %td, %" PRIu64 " words\n",
             map->length, dirty - base, gate - base, map->words);
    abort ();
  }
}

/* A few reads and writes an orchestrator or the filter makes. */
static void
exercise (bm_map *map, const uint8_t *data, size_t size)
{
  struct bm_info info;
  uint64_t words[4], first, n;
  uint8_t cookie[BM_COOKIE_SIZE];
  bm_map *again;

  check_layout (map);
  if (bm_map_info (map, &info) == -1)
    abort ();
  if (info.blocks != map->blocks || info.bitmap_words != map->words ||
      info.block_size != map->block_size)
    abort ();
  if (bm_dirty_count (map) < 0)
    abort ();

  /* Windows of words chosen from the input's last bytes: at the start, at
   * the end, and one past the end (must be refused, not read). */
  n = map->words < 4 ? map->words : 4;
  first = size >= 8 ? data[size - 1] % (map->words + 1) : 0;
  if (first + n > map->words)
    first = map->words - n;
  if (bm_peek (map, first, n, words) == -1 ||
      bm_gate_peek (map, first, n, words) == -1)
    abort ();
  if (bm_peek (map, map->words, 1, words) != -1 ||
      bm_peek (map, UINT64_MAX, 2, words) != -1)
    abort ();
  if (bm_take (map, first, n, words) < 0)
    abort ();
  if (bm_mark_words (map, first, n, words) == -1)
    abort ();
  if (bm_gate_mark_words (map, first, n, words) == -1)
    abort ();
  if (map->blocks > 0 &&
      (bm_mark_blocks (map, map->blocks - 1, 1) == -1 ||
       bm_gate_clear_blocks (map, 0, map->blocks) == -1))
    abort ();
  if (map->image_size > 0 && bm_mark_bytes (map, map->image_size - 1, 4096) == -1)
    abort ();
  bm_mark_bytes (map, map->image_size, 1);   /* past the end: refused */
  if (bm_get_cookie (map, cookie) == -1 || bm_set_cookie (map, cookie) == -1)
    abort ();
  if (bm_set_state_flags (map, 0, BM_STATE_FROZEN | BM_STATE_GATE_ALL) == -1)
    abort ();

  /* The filter's side, with nothing to wait for: a write window, then the
   * gate enforced over blocks all released (returns at once). */
  if (bm_write_begin (map) == -1)
    abort ();
  bm_write_end (map, map->image_size / 2, 8192, 1);
  if (map->blocks > 0 &&
      (bm_gate_clear_blocks (map, 0, map->blocks) == -1 ||
       bm_set_state_flags (map, BM_STATE_GATE, 0) == -1 ||
       bm_gate_wait (map, 0, map->image_size) == -1 ||
       bm_set_state_flags (map, 0, BM_STATE_GATE) == -1))
    abort ();
  /* a freeze that cannot wait: the header's inflight may be anything */
  if (bm_freeze (map, 0) == 0 && bm_thaw (map) == -1)
    abort ();

  /* The orchestrator's reopen with the geometry it expects. */
  again = bm_map_open_or_create (path, map->image_size, map->block_size);
  if (again == NULL)
    abort ();
  check_layout (again);
  bm_map_close (again);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  bm_map *map;
  int fd;

  unlink (path);
  fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd == -1)
    die ("creating the map file");
  if (size > 0 && write (fd, data, size) != (ssize_t) size)
    die ("writing the map file");
  close (fd);

  map = bm_map_open (path);
  if (map == NULL) {
    if (*bm_last_error () == '\0')
      abort ();                 /* every refusal leaves a message */
    return 0;
  }
  exercise (map, data, size);
  bm_map_close (map);
  return 0;
}
