/*
 * crashpoint.so: an LD_PRELOAD shim for tests/os_crash.rs.
 *
 * Loaded into `factwal load` inside the User-Mode Linux guest. With
 * FACTWAL_CRASH_AT="<point>:<n>" it counts the calls that match <point>
 * and, at the n-th, prints "crashpoint <point> <n>" on stderr (the guest's
 * console, which the host reads) and stops the whole process with SIGSTOP,
 * so that no thread does anything more before the host kills the kernel.
 * The kernel itself goes on (its writeback included) until the host's
 * SIGKILL, as it would until a real crash.
 *
 * Points, each named for the state the crash leaves:
 *   wal-sync-before      a record written to a segment, its fdatasync not begun
 *   segment-sync-before  a new segment's zeros and header written, not synced
 *   segment-rename       a new segment renamed into place, the directory not synced
 *   segment-unlink       a folded segment removed, the directory not synced
 *   dir-sync-before      any directory fsync, not begun
 *   state-sync-before    state.redb written by a commit (a fold), not synced
 *   state-sync-after     a state.redb sync returned, before what follows it
 *
 * Nothing here changes what a call does: the shim only stops the process
 * before or after it. Without FACTWAL_CRASH_AT it is inert.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

enum point {
    NONE,
    WAL_SYNC_BEFORE,
    SEGMENT_SYNC_BEFORE,
    SEGMENT_RENAME,
    SEGMENT_UNLINK,
    DIR_SYNC_BEFORE,
    STATE_SYNC_BEFORE,
    STATE_SYNC_AFTER,
};

static const struct {
    const char *name;
    enum point point;
} POINTS[] = {
    {"wal-sync-before", WAL_SYNC_BEFORE},     {"segment-sync-before", SEGMENT_SYNC_BEFORE},
    {"segment-rename", SEGMENT_RENAME},       {"segment-unlink", SEGMENT_UNLINK},
    {"dir-sync-before", DIR_SYNC_BEFORE},     {"state-sync-before", STATE_SYNC_BEFORE},
    {"state-sync-after", STATE_SYNC_AFTER},
};

static enum point armed = NONE;
static const char *armed_name = "";
static long target = 0;
static atomic_long seen = 0;

__attribute__((constructor)) static void arm(void) {
    const char *spec = getenv("FACTWAL_CRASH_AT");
    if (spec == NULL) return;
    const char *colon = strrchr(spec, ':');
    if (colon == NULL) return;
    for (size_t i = 0; i < sizeof POINTS / sizeof POINTS[0]; i++) {
        if (strlen(POINTS[i].name) == (size_t)(colon - spec) &&
            strncmp(POINTS[i].name, spec, (size_t)(colon - spec)) == 0) {
            armed = POINTS[i].point;
            armed_name = POINTS[i].name;
            target = strtol(colon + 1, NULL, 10);
        }
    }
    if (armed == NONE || target < 1) {
        static const char bad[] = "crashpoint: bad FACTWAL_CRASH_AT\n";
        (void)!write(2, bad, sizeof bad - 1);
        _exit(97);
    }
}

static void reached(enum point point) {
    if (point != armed || atomic_fetch_add(&seen, 1) + 1 != target) return;
    char line[96];
    int n = snprintf(line, sizeof line, "crashpoint %s %ld\n", armed_name, target);
    (void)!write(2, line, (size_t)n);
    kill(getpid(), SIGSTOP);
}

static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

enum kind { OTHER, SEGMENT, TEMPORARY, STATE, DIRECTORY };

static enum kind kind_of_path(const char *path) {
    if (ends_with(path, ".wal")) return SEGMENT;
    if (ends_with(path, ".wal.tmp")) return TEMPORARY;
    if (ends_with(path, "/state.redb")) return STATE;
    return OTHER;
}

static enum kind kind_of_fd(int fd) {
    if (armed == NONE) return OTHER;
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) return DIRECTORY;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return OTHER;
    path[n] = '\0';
    return kind_of_path(path);
}

typedef int (*fd_call)(int);
typedef int (*rename_call)(const char *, const char *);
typedef int (*path_call)(const char *);

/* The real function; a race between threads stores the same pointer. */
#define NEXT(name, type) \
    static type next_##name; \
    if (next_##name == NULL) next_##name = (type)dlsym(RTLD_NEXT, #name)

static void before_sync(int fd) {
    switch (kind_of_fd(fd)) {
    case SEGMENT: reached(WAL_SYNC_BEFORE); break;
    case TEMPORARY: reached(SEGMENT_SYNC_BEFORE); break;
    case STATE: reached(STATE_SYNC_BEFORE); break;
    case DIRECTORY: reached(DIR_SYNC_BEFORE); break;
    default: break;
    }
}

static void after_sync(int fd, int result) {
    if (result == 0 && kind_of_fd(fd) == STATE) reached(STATE_SYNC_AFTER);
}

int fdatasync(int fd) {
    NEXT(fdatasync, fd_call);
    before_sync(fd);
    int result = next_fdatasync(fd);
    after_sync(fd, result);
    return result;
}

int fsync(int fd) {
    NEXT(fsync, fd_call);
    before_sync(fd);
    int result = next_fsync(fd);
    after_sync(fd, result);
    return result;
}

int rename(const char *from, const char *to) {
    NEXT(rename, rename_call);
    int result = next_rename(from, to);
    if (result == 0 && armed != NONE && kind_of_path(to) == SEGMENT) reached(SEGMENT_RENAME);
    return result;
}

int unlink(const char *path) {
    NEXT(unlink, path_call);
    int result = next_unlink(path);
    if (result == 0 && armed != NONE && kind_of_path(path) == SEGMENT) reached(SEGMENT_UNLINK);
    return result;
}
