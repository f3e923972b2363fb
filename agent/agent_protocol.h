/*
 * The ImEE agent's request protocol, defined once for the agent (agent/agent.S, through the C
 * preprocessor) and for libimee. Plain C: #defines for the assembler, structs for C and C++.
 *
 * Two kinds of memory are shared between the host and the agent:
 *
 *  - the agent page (IMEE_PAGE_SIZE bytes): position-independent code, then a config block the
 *    host fills in, the GDT, the IDT the agent fills in at entry, and a small stack for exception
 *    frames. It is mapped at the agent's home VA in both address spaces, so everything in it is
 *    reachable whichever CR3 is loaded.
 *  - the data area (IMEE_DATA_PAGES pages at config.data_va in the local address space only): a
 *    header, the request slots, and the output buffer the agent stores the bytes into.
 *
 * Version 2 (1 + config.flags). Any layout change bumps IMEE_AGENT_PROTOCOL_VERSION; the host
 * checks the agent image's config block before it runs it.
 */
#ifndef IMEE_AGENT_PROTOCOL_H
#define IMEE_AGENT_PROTOCOL_H

#define IMEE_AGENT_PROTOCOL_VERSION 2
#define IMEE_AGENT_MAGIC 0x45454d49u /* "IMEE", little endian */
#define IMEE_PAGE_SIZE 4096

/* Agent page layout (offsets from the start of the page). */
#define IMEE_AGENT_ENTRY_OFFSET 0x000  /* the host starts the vCPU here */
#define IMEE_AGENT_CODE_LIMIT 0xb80    /* code and vector stubs end before this */
#define IMEE_AGENT_CONFIG_OFFSET 0xb80 /* struct imee_agent_config, written by the host */
#define IMEE_AGENT_GDT_OFFSET 0xbc0    /* null, 64-bit code (0x08), data (0x10) */
#define IMEE_AGENT_GDT_ENTRIES 3
#define IMEE_AGENT_IDT_OFFSET 0xc00 /* 32 interrupt gates, filled in by the agent at entry */
#define IMEE_AGENT_IDT_VECTORS 32
#define IMEE_AGENT_STACK_OFFSET 0xe00 /* exception frames land in [0xe00, 0x1000) */
#define IMEE_AGENT_STACK_TOP 0x1000
#define IMEE_AGENT_CODE_SELECTOR 0x08
#define IMEE_AGENT_DATA_SELECTOR 0x10

/* The data area: header, request slots, output. */
#define IMEE_DATA_PAGES 65
#define IMEE_DATA_SIZE (IMEE_DATA_PAGES * IMEE_PAGE_SIZE)
#define IMEE_HEADER_SIZE 64
#define IMEE_REQUEST_SIZE 48
#define IMEE_MAX_REQUESTS ((IMEE_PAGE_SIZE - IMEE_HEADER_SIZE) / IMEE_REQUEST_SIZE) /* 84 */
#define IMEE_OUTPUT_OFFSET IMEE_PAGE_SIZE
#define IMEE_OUTPUT_SIZE (IMEE_DATA_SIZE - IMEE_OUTPUT_OFFSET)
#define IMEE_CHUNK_SIZE 256 /* bytes per CR3 round trip: 16 xmm registers */

/* Config block offsets (struct imee_agent_config). */
#define IMEE_CFG_MAGIC 0
#define IMEE_CFG_VERSION 4
#define IMEE_CFG_LOCAL_CR3 8
#define IMEE_CFG_DATA_VA 16
#define IMEE_CFG_FLAGS 24

/* config.flags */
/* Poll mode: spin with IF=1 between doorbell checks (AMD hosts: agent/README.md). */
#define IMEE_AGENT_SPIN_STI 1u

/* Header offsets (struct imee_data_header). */
#define IMEE_HDR_MAGIC 0
#define IMEE_HDR_VERSION 4
#define IMEE_HDR_MODE 8
#define IMEE_HDR_COUNT 12
#define IMEE_HDR_DOORBELL 16
#define IMEE_HDR_COMPLETED 24
#define IMEE_HDR_FAULTS 32
#define IMEE_HDR_STRAY_VECTOR 36
#define IMEE_HDR_STRAY_RIP 40
#define IMEE_HDR_POLLS 48

/* Request offsets (struct imee_request). */
#define IMEE_REQ_CR3 0
#define IMEE_REQ_VA 8
#define IMEE_REQ_LEN 16
#define IMEE_REQ_OUT 20
#define IMEE_REQ_STATUS 24
#define IMEE_REQ_DONE 28
#define IMEE_REQ_CR2 32
#define IMEE_REQ_VECTOR 40
#define IMEE_REQ_ERROR_CODE 44

/* header.mode: what the agent does when it has finished the posted batch. */
#define IMEE_MODE_BATCH 0 /* hlt: KVM_RUN returns KVM_EXIT_HLT to the host */
#define IMEE_MODE_POLL 1  /* spin on header.doorbell, never leave guest mode */

/* request.status */
#define IMEE_STATUS_PENDING 0 /* host: posted, not served (a fresh slot) */
#define IMEE_STATUS_OK 1      /* agent: all len bytes stored at out */
#define IMEE_STATUS_FAULT 2   /* agent: an exception; done bytes stored, vector/cr2 recorded */

/* No request in progress: an exception then is the agent's own (header.stray_vector). */
#define IMEE_STRAY_NONE 0xffffffffu

#ifndef __ASSEMBLER__
#include <stddef.h>
#include <stdint.h>

/* In the agent page; written by the host before it starts the agent. */
struct imee_agent_config {
  uint32_t magic;     /* IMEE_AGENT_MAGIC: the image's own, the host checks it */
  uint32_t version;   /* IMEE_AGENT_PROTOCOL_VERSION: likewise */
  uint64_t local_cr3; /* GPA of the local address space's root table */
  uint64_t data_va;   /* VA of the data area in the local address space */
  uint32_t flags;     /* IMEE_AGENT_* */
  uint32_t pad;
  uint64_t reserved[4];
};

struct imee_data_header {
  uint32_t magic;        /* host: IMEE_AGENT_MAGIC */
  uint32_t version;      /* host: IMEE_AGENT_PROTOCOL_VERSION */
  uint32_t mode;         /* host: IMEE_MODE_* */
  uint32_t count;        /* host: requests in the posted batch, <= IMEE_MAX_REQUESTS */
  uint64_t doorbell;     /* host: sequence number of the posted batch (store last, release) */
  uint64_t completed;    /* agent: sequence number of the last batch served (store last) */
  uint32_t faults;       /* agent: exceptions taken while serving requests */
  uint32_t stray_vector; /* agent: exception outside any request, or IMEE_STRAY_NONE */
  uint64_t stray_rip;    /* agent: where that exception happened */
  uint64_t polls;        /* agent: doorbell checks in poll mode (a heartbeat) */
  uint64_t reserved;
};

struct imee_request {
  uint64_t cr3;        /* host: the target's root table GPA (PCID and KPTI bits cleared) */
  uint64_t va;         /* host: first byte, in the target's address space */
  uint32_t len;        /* host: bytes, out + len <= IMEE_DATA_SIZE */
  uint32_t out;        /* host: offset of the output in the data area (>= IMEE_OUTPUT_OFFSET) */
  uint32_t status;     /* agent: IMEE_STATUS_* */
  uint32_t done;       /* agent: bytes stored; on a fault, the start of the failing chunk */
  uint64_t cr2;        /* agent: CR2 at a fault */
  uint32_t vector;     /* agent: exception vector at a fault */
  uint32_t error_code; /* agent: its error code, 0 for vectors without one */
};

#ifdef __cplusplus
#define IMEE_STATIC_ASSERT static_assert
#else
#define IMEE_STATIC_ASSERT _Static_assert
#endif
IMEE_STATIC_ASSERT(sizeof(struct imee_agent_config) == 64, "config block layout");
IMEE_STATIC_ASSERT(sizeof(struct imee_data_header) == IMEE_HEADER_SIZE, "header layout");
IMEE_STATIC_ASSERT(sizeof(struct imee_request) == IMEE_REQUEST_SIZE, "request layout");
IMEE_STATIC_ASSERT(IMEE_AGENT_CONFIG_OFFSET + sizeof(struct imee_agent_config) <=
                       IMEE_AGENT_GDT_OFFSET,
                   "config overlaps GDT");
IMEE_STATIC_ASSERT(IMEE_AGENT_GDT_OFFSET + 8 * IMEE_AGENT_GDT_ENTRIES <= IMEE_AGENT_IDT_OFFSET,
                   "GDT overlaps IDT");
IMEE_STATIC_ASSERT(IMEE_AGENT_IDT_OFFSET + 16 * IMEE_AGENT_IDT_VECTORS <= IMEE_AGENT_STACK_OFFSET,
                   "IDT overlaps stack");
#define IMEE_OFFSET_IS(type, field, off) \
  IMEE_STATIC_ASSERT(offsetof(struct type, field) == (off), #type "." #field)
IMEE_OFFSET_IS(imee_agent_config, local_cr3, IMEE_CFG_LOCAL_CR3);
IMEE_OFFSET_IS(imee_agent_config, data_va, IMEE_CFG_DATA_VA);
IMEE_OFFSET_IS(imee_agent_config, flags, IMEE_CFG_FLAGS);
IMEE_OFFSET_IS(imee_data_header, mode, IMEE_HDR_MODE);
IMEE_OFFSET_IS(imee_data_header, count, IMEE_HDR_COUNT);
IMEE_OFFSET_IS(imee_data_header, doorbell, IMEE_HDR_DOORBELL);
IMEE_OFFSET_IS(imee_data_header, completed, IMEE_HDR_COMPLETED);
IMEE_OFFSET_IS(imee_data_header, faults, IMEE_HDR_FAULTS);
IMEE_OFFSET_IS(imee_data_header, stray_vector, IMEE_HDR_STRAY_VECTOR);
IMEE_OFFSET_IS(imee_data_header, stray_rip, IMEE_HDR_STRAY_RIP);
IMEE_OFFSET_IS(imee_data_header, polls, IMEE_HDR_POLLS);
IMEE_OFFSET_IS(imee_request, va, IMEE_REQ_VA);
IMEE_OFFSET_IS(imee_request, len, IMEE_REQ_LEN);
IMEE_OFFSET_IS(imee_request, out, IMEE_REQ_OUT);
IMEE_OFFSET_IS(imee_request, status, IMEE_REQ_STATUS);
IMEE_OFFSET_IS(imee_request, done, IMEE_REQ_DONE);
IMEE_OFFSET_IS(imee_request, cr2, IMEE_REQ_CR2);
IMEE_OFFSET_IS(imee_request, vector, IMEE_REQ_VECTOR);
IMEE_OFFSET_IS(imee_request, error_code, IMEE_REQ_ERROR_CODE);
#undef IMEE_OFFSET_IS
#undef IMEE_STATIC_ASSERT
#endif /* __ASSEMBLER__ */

#endif /* IMEE_AGENT_PROTOCOL_H */
