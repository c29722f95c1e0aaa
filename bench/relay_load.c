/* relay_load: the load generator of bench/relay.py, in C so that it costs
 * less than the relays it measures (a Python sender and receiver saturate
 * their core before a relay does).
 *
 * bench/relay.py opens the pairs (the relay's handshake is Python's job) and
 * hands the connected sockets to this program, which it compiles with gcc
 * into a temporary directory at run time (no binary is committed).
 *
 *   relay_load WARMUP WINDOW SEND_FDS RECV_FDS PIDS
 *
 * SEND_FDS and RECV_FDS are comma-separated descriptors this process
 * inherited; PIDS are the processes whose CPU time the window is measured
 * against (the relay, or socat and its children).  Senders use sendfile(2)
 * from a memfd (the kernel takes the pages by reference, no copy from user
 * space); receivers use recv(2) with MSG_TRUNC, which on TCP discards the
 * bytes in the kernel instead of copying them out.  One epoll, level
 * triggered; every receive takes whatever is queued, so bytes per receive
 * show how the relay delivers (many small pieces cost the receiver more
 * calls).
 *
 * Prints one JSON line: bytes received and receive calls in the window, the
 * window's length, this process's CPU seconds and the measured processes'
 * CPU seconds and run-queue seconds (runnable, waiting for a CPU another
 * process holds) from /proc/PID/task/TID/schedstat in it.  The second tells
 * a relay that is idle (waiting for data) from one that is starved.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 4096
#define SOURCE_SIZE (4 << 20)
#define SEND_CHUNK (1 << 20)
#define RECV_MAX (64 << 20)

static int parse_list(const char *s, long *out, int max) {
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s)
            break;
        out[n++] = v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

static double now_s(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Seconds on a CPU, and runnable but waiting for one, of every thread of
 * the given processes (schedstat's first two fields). */
static void procs_cpu(const long *pids, int n, double *run, double *wait) {
    uint64_t total = 0, waited = 0;
    for (int i = 0; i < n; i++) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%ld/task", pids[i]);
        DIR *d = opendir(path);
        if (!d)
            continue;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char stat[300];
            snprintf(stat, sizeof stat, "/proc/%ld/task/%s/schedstat", pids[i], e->d_name);
            FILE *f = fopen(stat, "r");
            if (!f)
                continue;
            unsigned long long ns, ws;
            if (fscanf(f, "%llu %llu", &ns, &ws) == 2) {
                total += ns;
                waited += ws;
            }
            fclose(f);
        }
        closedir(d);
    }
    *run = total / 1e9;
    *wait = waited / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s WARMUP WINDOW SEND_FDS RECV_FDS PIDS\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    double warmup = atof(argv[1]), window = atof(argv[2]);
    static long senders[MAX_FDS], receivers[MAX_FDS], pids[MAX_FDS];
    static off_t offsets[MAX_FDS * 2 + 8];
    int ns = parse_list(argv[3], senders, MAX_FDS);
    int nr = parse_list(argv[4], receivers, MAX_FDS);
    int np = parse_list(argv[5], pids, MAX_FDS);

    int src = memfd_create("relay_load", 0);
    if (src < 0 || ftruncate(src, SOURCE_SIZE) < 0) {
        perror("memfd");
        return 1;
    }
    char *map = mmap(NULL, SOURCE_SIZE, PROT_WRITE, MAP_SHARED, src, 0);
    if (map == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    memset(map, 0x5a, SOURCE_SIZE);
    munmap(map, SOURCE_SIZE);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < ns; i++) {
        /* data: the fd, with bit 32 set for a sender */
        struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)senders[i] | (1ULL << 32)};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, (int)senders[i], &ev) < 0) {
            perror("epoll_ctl sender");
            return 1;
        }
    }
    for (int i = 0; i < nr; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)receivers[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, (int)receivers[i], &ev) < 0) {
            perror("epoll_ctl receiver");
            return 1;
        }
    }

    double t0 = now_s(CLOCK_MONOTONIC);
    double start = t0 + warmup, end = start + window;
    int measuring = 0;
    double cpu0 = 0, target0 = 0, wait0 = 0, t_start = 0;
    unsigned long long bytes = 0, recvs = 0, wakeups = 0, sends = 0, sent = 0;
    struct epoll_event events[256];
    for (;;) {
        double now = now_s(CLOCK_MONOTONIC);
        if (!measuring && now >= start) {
            measuring = 1;
            bytes = recvs = wakeups = sends = sent = 0;
            procs_cpu(pids, np, &target0, &wait0);
            cpu0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
            t_start = now_s(CLOCK_MONOTONIC);
            /* the window starts after the samples, however long they took */
            end = t_start + window;
            continue;
        }
        if (now >= end)
            break;
        int n = epoll_wait(ep, events, 256, 100);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        wakeups++;
        for (int i = 0; i < n; i++) {
            int fd = (int)(events[i].data.u64 & 0xffffffffu);
            if (events[i].data.u64 >> 32) {
                off_t *off = &offsets[fd % (MAX_FDS * 2 + 8)];
                if (*off >= SOURCE_SIZE - SEND_CHUNK)
                    *off = 0;
                ssize_t s = sendfile(fd, src, off, SEND_CHUNK);
                if (s > 0) {
                    sends++;
                    sent += (unsigned long long)s;
                } else if (s < 0 && errno != EAGAIN && errno != EINTR) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                }
            } else {
                ssize_t r = recv(fd, NULL, RECV_MAX, MSG_TRUNC | MSG_DONTWAIT);
                if (r > 0) {
                    bytes += (unsigned long long)r;
                    recvs++;
                } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
                    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
                }
            }
        }
    }
    double cpu = now_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    double elapsed = now_s(CLOCK_MONOTONIC) - t_start;
    double target, wait;
    procs_cpu(pids, np, &target, &wait);
    target -= target0;
    wait -= wait0;
    printf("{\"bytes\": %llu, \"recvs\": %llu, \"wakeups\": %llu, \"sends\": %llu, "
           "\"sent\": %llu, \"elapsed\": %.6f, "
           "\"load_cpu\": %.6f, \"target_cpu\": %.6f, \"target_wait\": %.6f}\n",
           bytes, recvs, wakeups, sends, sent, elapsed, cpu, target, wait);
    return 0;
}
