/* bm-selftest: a quick check of the dirty-map library's own promises --
 * geometry checks, take/mark, the freeze handshake with real threads, the
 * gate.  The project's real tests are NUnit (tests/); this exists so that
 * native/ can be checked on its own: build/native/tests/bm-selftest.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "blockmigrate/dirtymap.h"

static int failures;

#define CHECK(cond) do { \
    if (!(cond)) { \
      fprintf (stderr, "%s:%d: FAILED: %s (last error: %s)\n", \
               __FILE__, __LINE__, #cond, bm_last_error ()); \
      failures++; \
    } \
  } while (0)

static char path[256];

static void
sleep_ms (int ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
  nanosleep (&ts, NULL);
}

static void
test_geometry (void)
{
  bm_map *m, *m2;
  struct bm_info info;

  unlink (path);
  CHECK (bm_valid_block_size (65536));
  CHECK (!bm_valid_block_size (65536 + 4096));
  CHECK (!bm_valid_block_size (2048));
  CHECK (!bm_valid_block_size (2u << 20));

  m = bm_map_create (path, (1u << 30) + 1, 65536);
  CHECK (m != NULL);
  CHECK (bm_map_create (path, 1u << 30, 65536) == NULL && errno == EEXIST);
  CHECK (bm_map_info (m, &info) == 0);
  CHECK (info.blocks == 16385 && info.bitmap_words == 257 && info.version == 1);

  m2 = bm_map_open_or_create (path, 2u << 30, 65536);
  CHECK (m2 == NULL);
  CHECK (strstr (bm_last_error (), "geometry mismatch: map has 16385 blocks of "
                 "65536 bytes, export needs 32768 blocks of 65536 bytes") != NULL);
  m2 = bm_map_open_or_create (path, (1u << 30) + 1, 65536);
  CHECK (m2 != NULL);
  bm_map_close (m2);
  bm_map_close (m);

  /* A corrupt header is refused. */
  int fd = open (path, O_WRONLY);
  CHECK (fd >= 0);
  CHECK (pwrite (fd, "BMDIRTY9", 8, 0) == 8);
  close (fd);
  CHECK (bm_map_open (path) == NULL);
  CHECK (strstr (bm_last_error (), "bad magic") != NULL);
  unlink (path);

  CHECK (bm_info_offset ("block_size") == 4);
  CHECK (bm_info_offset ("gated_blocks") == (int64_t) bm_info_size () - 8);
  CHECK (bm_info_offset ("nonsense") == -1);
}

static void
test_take_mark (bm_map *m)
{
  uint64_t w[4];

  CHECK (bm_take (m, 0, 4, NULL) == 0);
  CHECK (bm_mark_bytes (m, 65535, 2) == 0);           /* blocks 0 and 1 */
  CHECK (bm_dirty_count (m) == 2);
  CHECK (bm_peek (m, 0, 1, w) == 0 && w[0] == 3);
  CHECK (bm_mark_blocks (m, 63, 3) == 0);             /* crosses a word */
  CHECK (bm_take (m, 0, 2, w) == 5);
  CHECK (w[0] == (3 | (1ull << 63)) && w[1] == 3);
  CHECK (bm_dirty_count (m) == 0);
  CHECK (bm_mark_words (m, 0, 2, w) == 0);
  CHECK (bm_dirty_count (m) == 5);
  CHECK (bm_take (m, 0, 100000, w) == -1);            /* out of range */
  CHECK (bm_take (m, 0, 256, NULL) == 5);
}

struct writer { bm_map *m; volatile int stop; uint64_t n; };

static void *
writer_thread (void *arg)
{
  struct writer *w = arg;

  while (!w->stop) {
    if (bm_write_begin (w->m) == -1)
      break;
    bm_write_end (w->m, (w->n % 16384) * 65536, 4096, 1);
    w->n++;
  }
  return NULL;
}

static void
test_freeze (bm_map *m)
{
  struct writer w[3];
  pthread_t t[3];
  struct bm_info info;
  int i, round;

  for (i = 0; i < 3; i++) {
    w[i] = (struct writer) { .m = m };
    pthread_create (&t[i], NULL, writer_thread, &w[i]);
  }
  for (round = 0; round < 50; round++) {
    sleep_ms (2);
    CHECK (bm_freeze (m, 5000) == 0);
    uint64_t before[3] = { w[0].n, w[1].n, w[2].n };
    bm_take (m, 0, 256, NULL);
    /* A writer counts itself in before it looks at FROZEN and backs out when
     * it sees it (freeze.c), so inflight may read 1 for an instant after the
     * freeze: what must hold is that it goes back to 0 without a thaw. */
    for (i = 0; i < 100; i++) {
      CHECK (bm_map_info (m, &info) == 0);
      if (info.inflight == 0)
        break;
      sleep_ms (1);
    }
    CHECK (info.inflight == 0);
    sleep_ms (2);
    CHECK (bm_dirty_count (m) == 0);                   /* nothing got through */
    for (i = 0; i < 3; i++)
      CHECK (w[i].n <= before[i] + 1);      /* n++ may follow write_end */
    CHECK (bm_thaw (m) == 0);
  }
  for (i = 0; i < 3; i++) {
    w[i].stop = 1;
    pthread_join (t[i], NULL);
  }
  CHECK (bm_map_info (m, &info) == 0 && info.inflight == 0 && info.frozen_ns > 0);

  /* A writer stuck in the window makes freeze time out and thaw. */
  CHECK (bm_write_begin (m) == 0);
  CHECK (bm_freeze (m, 50) == -1);
  CHECK (bm_map_info (m, &info) == 0 && !(info.state & BM_STATE_FROZEN));
  bm_write_end (m, 0, 1, 0);
}

struct gated { bm_map *m; uint64_t offset; volatile int done; };

static void *
gate_thread (void *arg)
{
  struct gated *g = arg;

  bm_gate_wait (g->m, g->offset, 4096);
  g->done = 1;
  return NULL;
}

static void
test_gate (bm_map *m)
{
  uint64_t bits = 1u << 5;
  struct gated g = { .m = m, .offset = 5 * 65536 + 100 };
  struct bm_info info;
  pthread_t t;
  uint64_t seen = 0;

  CHECK (bm_gate_mark_words (m, 0, 1, &bits) == 0);
  CHECK (bm_gate_peek (m, 0, 1, &seen) == 0 && seen == bits);
  CHECK (bm_gate_wait (m, g.offset, 1) == 0);         /* GATE not set yet */
  CHECK (bm_set_state_flags (m, BM_STATE_GATE, 0) == 0);
  CHECK (bm_gate_wait (m, 0, 65536) == 0);            /* block 0 is not gated */
  pthread_create (&t, NULL, gate_thread, &g);
  sleep_ms (50);
  CHECK (!g.done);
  CHECK (bm_gate_clear_blocks (m, 5, 1) == 0);
  pthread_join (t, NULL);
  CHECK (g.done);
  CHECK (bm_gate_peek (m, 0, 1, &seen) == 0 && seen == 0);
  CHECK (bm_map_info (m, &info) == 0 && info.gated_ns > 0 && info.gated_blocks == 0);
  CHECK (bm_set_state_flags (m, 0, BM_STATE_GATE) == 0);
}

/* Who may touch a map: owner and mode of the file and its directory,
 * symlinks, and a map that shrinks under us. */
static void
test_trust (void)
{
  char dir[] = "/dev/shm/bm-selftest-trust.XXXXXX";
  char p[512], link_path[512], dlink[512], sub[1024];
  struct stat st;
  struct bm_info info;
  uint64_t w = 0;
  bm_map *m, *m2;
  int fd;

  if (mkdtemp (dir) == NULL) {
    perror ("mkdtemp");
    failures++;
    return;
  }
  snprintf (p, sizeof p, "%s/vm.map", dir);
  snprintf (link_path, sizeof link_path, "%s/link.map", dir);
  snprintf (dlink, sizeof dlink, "%s/dirlink", dir);
  snprintf (sub, sizeof sub, "%s/sub", dir);

  /* created 0600 whatever the umask */
  umask (0);
  m = bm_map_create (p, 1u << 20, 4096);
  umask (022);
  CHECK (m != NULL);
  CHECK (stat (p, &st) == 0 && (st.st_mode & 0777) == 0600);

  /* group or other bits on the map */
  chmod (p, 0660);
  CHECK (bm_map_open (p) == NULL && errno == EPERM);
  CHECK (strstr (bm_last_error (), "gives group or others access") != NULL);
  CHECK (strstr (bm_last_error (), "chmod 600") != NULL);
  chmod (p, 0604);
  CHECK (bm_map_open_or_create (p, 1u << 20, 4096) == NULL && errno == EPERM);
  chmod (p, 0600);

  /* a symlink at the map's name is never followed */
  CHECK (symlink (p, link_path) == 0);
  CHECK (bm_map_open (link_path) == NULL);
  CHECK (strstr (bm_last_error (), "symbolic link") != NULL);
  CHECK (bm_map_open_or_create (link_path, 1u << 20, 4096) == NULL);
  CHECK (lstat (link_path, &st) == 0 && S_ISLNK (st.st_mode));

  /* nor at its directory */
  CHECK (symlink (dir, dlink) == 0);
  snprintf (sub, sizeof sub, "%s/vm.map", dlink);
  CHECK (bm_map_open (sub) == NULL);
  CHECK (strstr (bm_last_error (), "symbolic link") != NULL);

  /* a directory writable by group or others */
  chmod (dir, 0770);
  CHECK (bm_map_open (p) == NULL && errno == EPERM);
  CHECK (strstr (bm_last_error (), "writable by group or others") != NULL);
  chmod (dir, 01777);           /* sticky /tmp-like: refused too */
  CHECK (bm_map_open (p) == NULL && errno == EPERM);
  chmod (dir, 0700);
  m2 = bm_map_open (p);
  CHECK (m2 != NULL);
  bm_map_close (m2);

  if (geteuid () == 0) {
    pid_t child;
    int status = -1;

    /* a map or a directory owned by somebody else */
    CHECK (chown (p, 65534, 65534) == 0);
    CHECK (bm_map_open (p) == NULL && errno == EPERM);
    CHECK (strstr (bm_last_error (), "owned by uid 65534") != NULL);
    CHECK (chown (p, 0, 0) == 0);
    snprintf (sub, sizeof sub, "%s/planted", dir);
    CHECK (mkdir (sub, 0755) == 0 && chown (sub, 65534, 65534) == 0);
    snprintf (sub, sizeof sub, "%s/planted/vm.map", dir);
    CHECK (bm_map_open_or_create (sub, 1u << 20, 4096) == NULL && errno == EPERM);
    CHECK (strstr (bm_last_error (), "is owned by uid 65534") != NULL);

    /* another user can neither open the map nor write it */
    chmod (dir, 0755);
    child = fork ();
    if (child == 0) {
      if (setgid (65534) != 0 || setuid (65534) != 0)
        _exit (2);
      if (open (p, O_RDWR) != -1 || open (p, O_RDONLY) != -1)
        _exit (3);
      if (bm_map_open (p) != NULL)
        _exit (4);
      _exit (0);
    }
    waitpid (child, &status, 0);
    CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 0);
    chmod (dir, 0700);
  }

  /* the map shrinks under us: errors, no SIGBUS */
  CHECK (bm_mark_blocks (m, 0, 1) == 0);
  fd = open (p, O_RDWR);
  CHECK (fd >= 0 && ftruncate (fd, 4096) == 0);
  close (fd);
  CHECK (bm_take (m, 0, 1, &w) == -1);
  CHECK (strstr (bm_last_error (), "shrank") != NULL);
  CHECK (bm_peek (m, 0, 1, &w) == -1);
  CHECK (bm_map_info (m, &info) == -1);
  CHECK (bm_mark_blocks (m, 0, 1) == -1);
  CHECK (bm_mark_bytes (m, 0, 1) == -1);
  CHECK (bm_freeze (m, 10) == -1);
  CHECK (bm_thaw (m) == -1);
  CHECK (bm_set_state_flags (m, BM_STATE_GATE, 0) == -1);
  CHECK (bm_gate_wait (m, 0, 1) == -1);
  CHECK (bm_gate_clear_blocks (m, 0, 1) == -1);
  CHECK (bm_dirty_count (m) == -1);
  CHECK (bm_set_throttle (m, 1) == -1);
  bm_map_close (m);
  /* and is refused when opened again */
  CHECK (bm_map_open (p) == NULL && errno == EINVAL);

  unlink (link_path);
  unlink (dlink);
  unlink (p);
  snprintf (sub, sizeof sub, "%s/planted", dir);
  rmdir (sub);
  rmdir (dir);
}

int
main (void)
{
  bm_map *m;

  snprintf (path, sizeof path, "/dev/shm/blockmigrate/selftest-%ld.map",
            (long) getpid ());
  test_geometry ();
  test_trust ();
  m = bm_map_create (path, 1u << 30, 65536);
  CHECK (m != NULL);
  if (m) {
    test_take_mark (m);
    test_freeze (m);
    test_gate (m);
    bm_map_close (m);
  }
  unlink (path);
  printf ("bm-selftest: %s (%d failures)\n", failures ? "FAILED" : "ok", failures);
  return failures != 0;
}
