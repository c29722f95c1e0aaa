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
 * against (the relay, or socat and its children).
 *
 * What the generator pays for is mostly the kernel's: on loopback the
 * process that transmits a segment also runs its receiver's TCP processing
 * (softirq in its own context), and a reader whose receive window had closed
 * transmits the peer's queued data when it reads.  So:
 *
 *  - senders splice(2) from a pipe of their own, topped up with tee(2) from
 *    one pipe filled once: tee takes references to the same pipe buffers,
 *    where sendfile(2) from a memfd looked up every page in the page cache
 *    (a sixth of the generator's time);
 *  - receivers get a 32 MiB receive buffer (SO_RCVBUFFORCE as root, else
 *    SO_RCVBUF up to net.core.rmem_max), so that the window stays open and
 *    the relay transmits (and pays for) its own sends instead of our reads
 *    clocking them out, and read with recv(2) and MSG_TRUNC, which discards
 *    the bytes in the kernel instead of copying them out.
 *
 * One epoll, level triggered; every receive takes whatever is queued, so
 * bytes per receive show how the relay delivers (many small pieces cost the
 * receiver more calls).
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
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 4096
#define FD_SLOTS (MAX_FDS * 2 + 8)
/* Bytes per splice to a socket, and the size of every pipe (the default
 * fs.pipe-max-size); 0x5a over and over, as the Python generator sends. */
#define SEND_CHUNK (1 << 20)
#define RECV_MAX (64 << 20)
#define RECV_BUFFER (32 << 20)

/* Each sender's pipe, by descriptor: [0] read end, [1] write end. */
static int pipes[FD_SLOTS][2];
/* The pipe every sender's pipe is topped up from, and its length. */
static int source_pipe[2] = {-1, -1};
static int chunk = SEND_CHUNK;

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

/* Fill the source pipe once: the only copy of the payload this process makes. */
static int make_source(void) {
    if (pipe2(source_pipe, O_CLOEXEC) < 0) {
        perror("pipe2");
        return -1;
    }
    int got = fcntl(source_pipe[1], F_SETPIPE_SZ, SEND_CHUNK);
    if (got < 0)
        got = fcntl(source_pipe[1], F_GETPIPE_SZ);
    chunk = got < SEND_CHUNK ? got : SEND_CHUNK;
    static char payload[SEND_CHUNK];
    memset(payload, 0x5a, sizeof payload);
    for (int done = 0; done < chunk;) {
        ssize_t w = write(source_pipe[1], payload + done, (size_t)(chunk - done));
        if (w <= 0) {
            perror("write source pipe");
            return -1;
        }
        done += (int)w;
    }
    return 0;
}

static int add_sender(int ep, int fd) {
    int *pp = pipes[fd % FD_SLOTS];
    if (pipe2(pp, O_CLOEXEC | O_NONBLOCK) < 0) {
        perror("pipe2 sender");
        return -1;
    }
    fcntl(pp[1], F_SETPIPE_SZ, chunk);
    /* data: the fd, with bit 32 set for a sender */
    struct epoll_event ev = {.events = EPOLLOUT, .data.u64 = (uint64_t)fd | (1ULL << 32)};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        perror("epoll_ctl sender");
        return -1;
    }
    return 0;
}

static int add_receiver(int ep, int fd) {
    /* A window that never closes: the relay's sends go out in its own
     * context, not clocked out by our reads (see the top of the file). */
    int size = RECV_BUFFER;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        perror("epoll_ctl receiver");
        return -1;
    }
    return 0;
}

/* One writable sender: top its pipe up from the source (tee takes buffer
 * references, no copy) and splice the pipe to the socket.  What the socket
 * did not take stays in the pipe for next time, so the stream stays 0x5a. */
static ssize_t send_some(int fd) {
    int *pp = pipes[fd % FD_SLOTS];
    int queued = 0;
    if (ioctl(pp[0], FIONREAD, &queued) < 0)
        queued = chunk;
    if (queued <= chunk / 2)
        tee(source_pipe[0], pp[1], (size_t)(chunk - queued), SPLICE_F_NONBLOCK);
    return splice(pp[0], NULL, fd, NULL, (size_t)chunk, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s WARMUP WINDOW SEND_FDS RECV_FDS PIDS\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    double warmup = atof(argv[1]), window = atof(argv[2]);
    static long senders[MAX_FDS], receivers[MAX_FDS], pids[MAX_FDS];
    int ns = parse_list(argv[3], senders, MAX_FDS);
    int nr = parse_list(argv[4], receivers, MAX_FDS);
    int np = parse_list(argv[5], pids, MAX_FDS);

    if (make_source() < 0)
        return 1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    for (int i = 0; i < ns; i++)
        if (add_sender(ep, (int)senders[i]) < 0)
            return 1;
    for (int i = 0; i < nr; i++)
        if (add_receiver(ep, (int)receivers[i]) < 0)
            return 1;

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
                ssize_t s = send_some(fd);
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
