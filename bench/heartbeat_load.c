/* heartbeat_load: the load generator of bench/cluster_heartbeats.py, in C so
 * that it costs a small fraction of the servers it measures.  On a two-core
 * machine it shares a core with one of two rendezvous nodes; a Python
 * generator spends more CPU per heartbeat than the node it loads.
 *
 * bench/cluster_heartbeats.py builds the heartbeats (RendezvousMessage
 * RegisterPeer for ids it registered first, each with the 127.x.y.z address
 * that registered it) into files and compiles this program with cc into a
 * temporary directory at run time (no binary is committed).
 *
 *   heartbeat_load WARMUP SECONDS WINDOW SOCKETS TICK_US GSO PORT:PID:FILE...
 *
 * Each target (one or two) is a UDP port on 127.0.0.1, the pid of the
 * process serving it and the file of its heartbeats (each node has its own
 * hosts).  A FILE holds records of a 4-byte IPv4 source address (network
 * order), a 1-byte length and that many bytes of datagram.
 *
 * For every target SOCKETS sockets are bound to 0.0.0.0 on ephemeral
 * ports; each message goes out with IP_PKTINFO naming its source address,
 * so a few sockets speak for thousands of hosts (the server's per-IP limits
 * see many addresses) and the replies, addressed to 127.x.y.z:port, come
 * back to those sockets.  Up to GSO consecutive records of one address and
 * size go out as one UDP GSO message (UDP_SEGMENT: the kernel splits it
 * into separate datagrams before the server's socket, which sees them one
 * by one); sendmmsg(2) and recvmmsg(2) move up to BATCH messages per call.
 * Measured on loopback in a VM: ~5.5 us of this process's CPU per
 * heartbeat with one datagram per message and a wakeup per reply batch,
 * ~3.3 us with GSO 8 and the tick below (most of what is left is the
 * kernel's send and receive path, which the sender pays on loopback).
 *
 * Closed loop: at most WINDOW heartbeats are unanswered per target.  Every
 * TICK_US (nanosleep, not epoll: a wakeup per handful of replies cost more
 * than the sends) the sockets are drained and each target topped up once
 * a quarter window (at most BATCH) has come back.  WINDOW must stay below
 * what the server's receive buffer holds (~270 small datagrams with the
 * default 208 KiB) or the server drops.  Replies are all alike, so a lost
 * datagram is only seen as silence: after STALL_S with no reply from a
 * target its unanswered ones count as lost and its window starts again.
 *
 * Prints one JSON line after WARMUP + SECONDS: per target the heartbeats
 * sent and answered in the measured SECONDS (answers other than 3a00, the
 * RegisterPeerResponse of a known id, counted apart), those counted lost,
 * and the target process's CPU seconds (/proc/PID/stat) in that time; and
 * this process's own CPU seconds (getrusage) in it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 2
#define MAX_SOCKETS 64
#define BATCH 64
#define GSO_MAX 32
#define STALL_S 0.1
#define RCVBUF (4 << 20)

struct datagram {
    uint32_t src; /* network order */
    uint8_t len;
    uint8_t data[255];
};

struct target {
    int port;
    long pid;
    int socks[MAX_SOCKETS];
    int next_sock;
    size_t next_dgram;
    long inflight;
    double last_reply;
    unsigned long long sent, replies, other, lost; /* in the measured window */
    double cpu0, cpu;
    struct datagram *dgrams;
    size_t ndgrams;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double self_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* utime + stime of every thread of a process, in seconds; 0 if it is gone. */
static double proc_cpu(long pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    unsigned long long utime = 0, stime = 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return 0;
    return (utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static int load_file(const char *path, struct target *t) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    size_t cap = 1024, ndgrams = 0;
    struct datagram *dgrams = malloc(cap * sizeof *dgrams);
    for (;;) {
        uint8_t head[5];
        if (fread(head, 1, 5, f) != 5)
            break;
        if (ndgrams == cap) {
            cap *= 2;
            dgrams = realloc(dgrams, cap * sizeof *dgrams);
        }
        struct datagram *d = &dgrams[ndgrams];
        memcpy(&d->src, head, 4);
        d->len = head[4];
        if (fread(d->data, 1, d->len, f) != d->len)
            break;
        ndgrams++;
    }
    fclose(f);
    t->dgrams = dgrams;
    t->ndgrams = ndgrams;
    return ndgrams ? 0 : -1;
}

static int open_socket(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    int size = RCVBUF;
    /* SO_RCVBUFFORCE needs CAP_NET_ADMIN; otherwise rmem_max caps it */
    if (setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size) < 0)
        setsockopt(s, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    if (bind(s, (struct sockaddr *)&any, sizeof any) < 0) {
        close(s);
        return -1;
    }
    return s;
}

/* Sends up to n of the target's next heartbeats on its next socket. */
/* Sends up to n of the target's next heartbeats on its next socket: up to
 * BATCH messages, each a run of up to gso consecutive datagrams of one
 * source address and size sent as one UDP GSO buffer (UDP_SEGMENT; the
 * kernel splits it into separate datagrams), which costs the sender one
 * pass through the IP stack per run instead of per datagram. */
static void send_batch(struct target *t, int n, int gso, int measuring) {
    static struct mmsghdr msgs[BATCH];
    static struct iovec iov[BATCH * GSO_MAX];
    static int segments[BATCH];
    static char control[BATCH][CMSG_SPACE(sizeof(struct in_pktinfo)) + CMSG_SPACE(sizeof(uint16_t))];
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(t->port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int nmsg = 0, queued = 0;
    size_t pos = t->next_dgram;
    while (nmsg < BATCH && queued < n) {
        struct datagram *first = &t->dgrams[pos];
        struct iovec *v = &iov[nmsg * GSO_MAX];
        int k = 0;
        while (k < gso && queued + k < n) {
            struct datagram *d = &t->dgrams[pos];
            if (k && (d->src != first->src || d->len != first->len))
                break;
            v[k].iov_base = d->data;
            v[k].iov_len = d->len;
            k++;
            pos = (pos + 1) % t->ndgrams;
        }
        struct msghdr *h = &msgs[nmsg].msg_hdr;
        memset(&msgs[nmsg], 0, sizeof msgs[nmsg]);
        h->msg_name = &dst;
        h->msg_namelen = sizeof dst;
        h->msg_iov = v;
        h->msg_iovlen = k;
        h->msg_control = control[nmsg];
        h->msg_controllen = CMSG_SPACE(sizeof(struct in_pktinfo));
        struct cmsghdr *c = CMSG_FIRSTHDR(h);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
        struct in_pktinfo pi = {.ipi_ifindex = 0, .ipi_spec_dst.s_addr = first->src};
        memcpy(CMSG_DATA(c), &pi, sizeof pi);
        if (k > 1) {
            h->msg_controllen += CMSG_SPACE(sizeof(uint16_t));
            c = CMSG_NXTHDR(h, c);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t size = first->len;
            memcpy(CMSG_DATA(c), &size, sizeof size);
        }
        segments[nmsg++] = k;
        queued += k;
    }
    int fd = t->socks[t->next_sock];
    int sent = sendmmsg(fd, msgs, nmsg, MSG_DONTWAIT);
    if (sent <= 0)
        return; /* socket buffer full: try again after the next replies */
    int datagrams = 0;
    for (int i = 0; i < sent; i++)
        datagrams += segments[i];
    t->next_sock = (t->next_sock + 1) % MAX_SOCKETS;
    if (t->socks[t->next_sock] < 0)
        t->next_sock = 0;
    t->next_dgram = (t->next_dgram + datagrams) % t->ndgrams;
    t->inflight += datagrams;
    if (measuring)
        t->sent += datagrams;
}

static void receive(struct target *t, int fd, int measuring, double now) {
    static struct mmsghdr msgs[BATCH];
    static struct iovec iov[BATCH];
    static uint8_t bufs[BATCH][64];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i].iov_base = bufs[i];
            iov[i].iov_len = sizeof bufs[i];
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int n = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0)
            return;
        t->last_reply = now;
        t->inflight -= n;
        if (t->inflight < 0)
            t->inflight = 0; /* late answers to heartbeats already counted lost */
        if (measuring) {
            for (int i = 0; i < n; i++) {
                if (msgs[i].msg_len == 2 && bufs[i][0] == 0x3a && bufs[i][1] == 0x00)
                    t->replies++;
                else
                    t->other++;
            }
        }
        if (n < BATCH)
            return;
    }
}

static int parse_target(const char *arg, struct target *t, int nsock) {
    int used = 0;
    if (sscanf(arg, "%d:%ld:%n", &t->port, &t->pid, &used) != 2 || !used)
        return -1;
    if (load_file(arg + used, t) < 0) {
        fprintf(stderr, "%s: no datagrams\n", arg + used);
        return -1;
    }
    for (int i = 0; i < MAX_SOCKETS; i++)
        t->socks[i] = -1;
    for (int i = 0; i < nsock; i++) {
        t->socks[i] = open_socket();
        if (t->socks[i] < 0)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 8 || argc > 7 + MAX_TARGETS) {
        fprintf(stderr,
                "usage: %s WARMUP SECONDS WINDOW SOCKETS TICK_US GSO PORT:PID:FILE "
                "[PORT:PID:FILE]\n",
                argv[0]);
        return 2;
    }
    double warmup = atof(argv[1]), seconds = atof(argv[2]);
    long window = atol(argv[3]);
    int nsock = atoi(argv[4]);
    long tick_us = atol(argv[5]);
    int gso = atoi(argv[6]);
    if (window < 1 || nsock < 1 || nsock > MAX_SOCKETS || tick_us < 1 || tick_us > 999999 ||
        gso < 1 || gso > GSO_MAX) {
        fprintf(stderr, "WINDOW >= 1, SOCKETS 1..%d, TICK_US 1..999999, GSO 1..%d\n",
                MAX_SOCKETS, GSO_MAX);
        return 2;
    }
    int ntargets = argc - 7;
    static struct target targets[MAX_TARGETS];
    for (int i = 0; i < ntargets; i++) {
        if (parse_target(argv[7 + i], &targets[i], nsock) < 0) {
            perror(argv[7 + i]);
            return 1;
        }
    }
    /* refill once this many have come back: sends go out in batches */
    long refill = window / 4 < BATCH ? window / 4 : BATCH;
    if (refill < 1)
        refill = 1;

    double t0 = now_s(), start = t0 + warmup, end = start + seconds;
    int measuring = 0;
    double cpu0 = 0, t_start = 0;
    struct timespec tick = {.tv_sec = 0, .tv_nsec = tick_us * 1000};
    for (int i = 0; i < ntargets; i++)
        targets[i].last_reply = t0;
    for (;;) {
        double now = now_s();
        if (!measuring && now >= start) {
            measuring = 1;
            t_start = now;
            cpu0 = self_cpu();
            for (int i = 0; i < ntargets; i++)
                targets[i].cpu0 = proc_cpu(targets[i].pid);
        }
        if (measuring && now >= end)
            break;
        for (int i = 0; i < ntargets; i++) {
            struct target *t = &targets[i];
            for (int k = 0; k < nsock; k++)
                receive(t, t->socks[k], measuring, now);
            if (t->inflight > 0 && now - t->last_reply > STALL_S) {
                if (measuring)
                    t->lost += t->inflight;
                t->inflight = 0;
                t->last_reply = now;
            }
            while (window - t->inflight >= refill) {
                long before = t->inflight;
                send_batch(t, (int)(window - t->inflight), gso, measuring);
                if (t->inflight == before)
                    break;
            }
        }
        nanosleep(&tick, NULL);
    }
    double elapsed = now_s() - t_start;
    double cpu = self_cpu() - cpu0;
    printf("{\"seconds\": %.6f, \"load_cpu\": %.6f, \"targets\": [", elapsed, cpu);
    for (int i = 0; i < ntargets; i++) {
        struct target *t = &targets[i];
        t->cpu = proc_cpu(t->pid) - t->cpu0;
        printf("%s{\"port\": %d, \"pid\": %ld, \"sent\": %llu, \"replies\": %llu, "
               "\"other\": %llu, \"lost\": %llu, \"cpu\": %.6f}",
               i ? ", " : "", t->port, t->pid, t->sent, t->replies, t->other, t->lost, t->cpu);
    }
    printf("]}\n");
    return 0;
}
