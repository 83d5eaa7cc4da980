/*
 * check.c — the heap's invariant checker, secretheap_check: with every
 * allocator lock held, each slab's bitmap, req slots and counts agree, every
 * free or cached block is wiped, every magazine block is a free block start
 * of its class, and every list holds exactly the slabs its counts say. The
 * C twin of alloc's Heap.Check (alloc/check.go); tests and the fuzzers run it
 * after every step.
 */
#include <errno.h>
#include <stdio.h>

#include "heap.h"

static bool all_zero(const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

struct check_state {
    int bad;
    uint64_t slabs[SH_NUM_CLASSES];
};

static void check_span(struct sh_span *s, void *arg) {
    struct check_state *cs = arg;
    if (s->kind != SH_SPAN_SLAB) {
        if (atomic_load_explicit(&s->run_req, memory_order_relaxed) == 0) {
            fprintf(stderr, "secretheap: check: free run %p still registered\n", (void *)s->start);
            cs->bad = 1;
        }
        return;
    }
    cs->slabs[s->cls]++;
    uint32_t live = 0, central = 0;
    for (uint32_t i = 0; i < s->nblocks; i++) {
        bool isfree = s->freebits[i >> 6] & (1ULL << (i & 63));
        uint16_t r = atomic_load_explicit(&s->req[i], memory_order_relaxed);
        void *b = (void *)(s->start + (uintptr_t)i * s->block_size);
        if (r) {
            live++;
            if (isfree) {
                fprintf(stderr, "secretheap: check: block %p (class %u B) live and free\n", b, s->block_size);
                cs->bad = 1;
            }
            if (r - 1u > s->block_size) {
                fprintf(stderr, "secretheap: check: block %p records %u bytes in class %u B\n", b, r - 1u,
                        s->block_size);
                cs->bad = 1;
            }
        }
        if (isfree) {
            central++;
            if (!all_zero(b, s->block_size)) {
                fprintf(stderr, "secretheap: check: free block %p (class %u B) is not wiped\n", b, s->block_size);
                cs->bad = 1;
            }
        }
    }
    for (uint32_t i = s->nblocks; i < 256; i++)
        if (s->freebits[i >> 6] & (1ULL << (i & 63))) {
            fprintf(stderr, "secretheap: check: slab %p: free bit %u beyond its %u blocks\n", (void *)s->start, i,
                    s->nblocks);
            cs->bad = 1;
        }
    if (central != s->nfree) {
        fprintf(stderr, "secretheap: check: slab %p (class %u B): nfree %u, bitmap %u\n", (void *)s->start,
                s->block_size, s->nfree, central);
        cs->bad = 1;
    }
    if (live + central + s->check_mag != s->nblocks) {
        fprintf(stderr, "secretheap: check: slab %p (class %u B): used %u + free %u + cached %u != %u blocks\n",
                (void *)s->start, s->block_size, live, central, s->check_mag, s->nblocks);
        cs->bad = 1;
    }
    if ((s->nfree > 0) != (s->listed != 0)) {
        fprintf(stderr, "secretheap: check: slab %p: %u free blocks but listed=%u\n", (void *)s->start, s->nfree,
                s->listed);
        cs->bad = 1;
    }
    s->check_mag = 0;
}

static void clear_mag(struct sh_span *s, void *arg) {
    (void)arg;
    s->check_mag = 0;
}

int secretheap_check(void) {
    sh_init();
    if (sh_fork_gate_check() != 0)
        return EINVAL; /* an unseen fork child's closed allocator */
    struct check_state st = {0};
    pthread_mutex_lock(&sh_tc_mu);
    for (int i = 0; i < SH_NUM_CLASSES; i++)
        pthread_mutex_lock(&sh_classes[i].mu);
    sh_chunk_lock();
    st.bad = sh_chunk_check() != 0;
    sh_chunk_foreach_span(clear_mag, NULL);
    /* Every magazine block: inside a live slab of its class, on a block
     * boundary, free (req 0, not also in the bitmap), wiped. */
    for (struct sh_tcache *tc = sh_tc_list; tc; tc = tc->next) {
        for (unsigned cls = 0; cls < SH_NUM_CLASSES; cls++) {
            struct sh_mag *m = &tc->mags[cls];
            if (m->count > m->cap) {
                fprintf(stderr, "secretheap: check: magazine of class %u holds %u > %u\n", sh_class_size[cls], m->count,
                        m->cap);
                st.bad = 1;
                continue;
            }
            for (uint32_t j = 0; j < m->count; j++) {
                uintptr_t p = (uintptr_t)m->items[j].p;
                struct sh_chunk *c = sh_chunk_of(p);
                struct sh_span *s =
                    c && !c->large
                        ? atomic_load_explicit(&c->pagemap[(p - c->base) >> SH_OS_PAGE_SHIFT], memory_order_relaxed)
                        : NULL;
                if (!s || s->kind != SH_SPAN_SLAB || s->cls != cls) {
                    fprintf(stderr, "secretheap: check: cached block %#lx is not in a slab of class %u B\n",
                            (unsigned long)p, sh_class_size[cls]);
                    st.bad = 1;
                    continue;
                }
                uint32_t idx = sh_block_index(s, p - s->start);
                if ((uintptr_t)idx * s->block_size != p - s->start || idx >= s->nblocks ||
                    m->items[j].req != &s->req[idx]) {
                    fprintf(stderr, "secretheap: check: cached block %#lx is not a block start\n", (unsigned long)p);
                    st.bad = 1;
                    continue;
                }
                if (atomic_load_explicit(&s->req[idx], memory_order_relaxed) != 0 ||
                    (s->freebits[idx >> 6] & (1ULL << (idx & 63)))) {
                    fprintf(stderr, "secretheap: check: cached block %#lx is also live or centrally free\n",
                            (unsigned long)p);
                    st.bad = 1;
                }
                if (!all_zero((void *)p, s->block_size)) {
                    fprintf(stderr, "secretheap: check: cached block %#lx (class %u B) is not wiped\n",
                            (unsigned long)p, s->block_size);
                    st.bad = 1;
                }
                s->check_mag++;
            }
        }
    }
    sh_chunk_foreach_span(check_span, &st);
    /* Every list: its slabs listed, of its class and kind, owned by the
     * list's owner; the counts match. */
    for (unsigned i = 0; i < SH_NUM_CLASSES; i++) {
        uint32_t n[2] = {0, 0};
        for (struct sh_tcache *tc = NULL, *next = sh_tc_list;; tc = next, next = next ? next->next : NULL) {
            for (int sec = 0; sec < 2; sec++) {
                if (sec && tc)
                    continue;
                struct sh_span *head = tc ? tc->own[i] : sec ? sh_classes[i].spartial : sh_classes[i].partial;
                for (struct sh_span *s = head; s; s = s->next) {
                    n[sec]++;
                    if (!s->listed || s->cls != i || (s->secure != 0) != sec || (!sec && s->owner != tc)) {
                        fprintf(stderr, "secretheap: check: slab %p on the wrong list (class %u B)\n", (void *)s->start,
                                sh_class_size[i]);
                        st.bad = 1;
                    }
                }
            }
            if (!next)
                break;
        }
        if (n[0] != sh_classes[i].nlisted[0] || n[1] != sh_classes[i].nlisted[1]) {
            fprintf(stderr, "secretheap: check: class %u B lists %u+%u slabs, counts %u+%u\n", sh_class_size[i], n[0],
                    n[1], sh_classes[i].nlisted[0], sh_classes[i].nlisted[1]);
            st.bad = 1;
        }
    }
    for (int i = 0; i < SH_NUM_CLASSES; i++)
        if (st.slabs[i] != sh_classes[i].slabs) {
            fprintf(stderr, "secretheap: check: class %u B counts %llu slabs, found %llu\n", sh_class_size[i],
                    (unsigned long long)sh_classes[i].slabs, (unsigned long long)st.slabs[i]);
            st.bad = 1;
        }
    sh_chunk_unlock();
    for (int i = SH_NUM_CLASSES - 1; i >= 0; i--)
        pthread_mutex_unlock(&sh_classes[i].mu);
    pthread_mutex_unlock(&sh_tc_mu);
    return st.bad ? EINVAL : 0;
}
