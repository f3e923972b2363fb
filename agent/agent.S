/*
 * The ImEE agent: one 4 KiB page of position-independent x86-64 code, ring 0, long mode.
 *
 * It serves the requests the host posts in the data area (agent/agent_protocol.h):
 * for each IMEE_CHUNK_SIZE bytes of a request it loads the target's CR3, loads the bytes into
 * xmm registers, loads the local CR3 and stores them into the output buffer. Between the two CR3
 * writes it touches only bytes inside the requested range and its own page (code, IDT, GDT,
 * stack), which its home VA maps in both address spaces.
 *
 * Registers that live across the loop (exception stubs rely on them):
 *   rbx  data area VA (local space)       r14  local CR3
 *   r12  index of the request being served r15  its slot, or 0 outside any request
 *   r13  bytes of it already stored        rbp  sequence number of the batch being served
 */
#include "agent_protocol.h"

	.code64
	.text

	/* Offset 0: the entry point (IMEE_AGENT_ENTRY_OFFSET). */
entry:
	cli
	lea	page_start+IMEE_AGENT_STACK_TOP(%rip), %rsp
	xor	%r15d, %r15d

	/* Fill the IDT with our own stub addresses: the host does not need to know them. */
	lea	vector_stubs(%rip), %rax
	lea	page_start+IMEE_AGENT_IDT_OFFSET(%rip), %rdi
	mov	$IMEE_AGENT_IDT_VECTORS, %ecx
1:	mov	%rax, %rdx
	mov	%dx, (%rdi)			/* offset 15:0 */
	movw	$IMEE_AGENT_CODE_SELECTOR, 2(%rdi)
	movw	$0x8e00, 4(%rdi)		/* present, DPL 0, 64-bit interrupt gate, IST 0 */
	shr	$16, %rdx
	mov	%dx, 6(%rdi)			/* offset 31:16 */
	shr	$16, %rdx
	mov	%edx, 8(%rdi)			/* offset 63:32 */
	movl	$0, 12(%rdi)
	add	$16, %rax
	add	$16, %rdi
	dec	%ecx
	jnz	1b

main_loop:
	mov	page_start+IMEE_AGENT_CONFIG_OFFSET+IMEE_CFG_LOCAL_CR3(%rip), %r14
	mov	page_start+IMEE_AGENT_CONFIG_OFFSET+IMEE_CFG_DATA_VA(%rip), %rbx
	mov	%r14, %cr3

wait:
	mov	IMEE_HDR_DOORBELL(%rbx), %rax
	cmp	IMEE_HDR_COMPLETED(%rbx), %rax
	jne	serve
	cmpl	$IMEE_MODE_POLL, IMEE_HDR_MODE(%rbx)
	jne	idle
	incq	IMEE_HDR_POLLS(%rbx)
	testl	$IMEE_AGENT_SPIN_STI, page_start+IMEE_AGENT_CONFIG_OFFSET+IMEE_CFG_FLAGS(%rip)
	jnz	spin_sti
	pause
	jmp	wait
spin_sti:
	sti				/* AMD hosts only: agent/README.md */
	pause
	cli
	jmp	wait
idle:
	hlt				/* batch done: KVM_EXIT_HLT. The next KVM_RUN resumes here. */
	jmp	main_loop

serve:
	mov	%rax, %rbp		/* the doorbell was read before the requests: x86 keeps loads ordered */
	xor	%r12d, %r12d
request_loop:
	cmp	IMEE_HDR_COUNT(%rbx), %r12d
	jae	batch_done
	imul	$IMEE_REQUEST_SIZE, %r12, %r15
	lea	IMEE_HEADER_SIZE(%rbx,%r15), %r15
	xor	%r13d, %r13d
chunk_loop:
	mov	IMEE_REQ_LEN(%r15), %ecx
	sub	%r13, %rcx
	jz	request_ok
	cmp	$IMEE_CHUNK_SIZE, %rcx
	jbe	1f
	mov	$IMEE_CHUNK_SIZE, %ecx
1:	mov	IMEE_REQ_VA(%r15), %rsi
	add	%r13, %rsi
	mov	IMEE_REQ_OUT(%r15), %edi
	add	%rbx, %rdi
	add	%r13, %rdi
	mov	IMEE_REQ_CR3(%r15), %rdx

	mov	%rdx, %cr3		/* target space: only loads inside [rsi, rsi+rcx) from here */
	cmp	$16, %rcx
	jb	load_small
	movdqu	-16(%rsi,%rcx), %xmm15	/* the last 16 bytes, overlapping the full chunks */
	movdqu	(%rsi), %xmm0
	.irp	i, 1,2,3,4,5,6,7,8,9,10,11,12,13,14
	cmp	$(16 * (\i + 1)), %rcx
	jb	loaded
	movdqu	(16 * \i)(%rsi), %xmm\i
	.endr
	jmp	loaded
load_small:				/* 1..15 bytes: exact widths 8, 4, 2, 1 */
	test	$8, %cl
	jz	1f
	mov	(%rsi), %r8
1:	mov	%ecx, %eax
	and	$8, %eax
	test	$4, %cl
	jz	2f
	mov	(%rsi,%rax), %r9d
2:	mov	%ecx, %eax
	and	$12, %eax
	test	$2, %cl
	jz	3f
	movzwl	(%rsi,%rax), %r10d
3:	mov	%ecx, %eax
	and	$14, %eax
	test	$1, %cl
	jz	loaded
	movzbl	(%rsi,%rax), %r11d
loaded:
	mov	%r14, %cr3		/* local space again */

	cmp	$16, %rcx
	jb	store_small
	movdqu	%xmm15, -16(%rdi,%rcx)
	movdqu	%xmm0, (%rdi)
	.irp	i, 1,2,3,4,5,6,7,8,9,10,11,12,13,14
	cmp	$(16 * (\i + 1)), %rcx
	jb	stored
	movdqu	%xmm\i, (16 * \i)(%rdi)
	.endr
	jmp	stored
store_small:
	test	$8, %cl
	jz	1f
	mov	%r8, (%rdi)
1:	mov	%ecx, %eax
	and	$8, %eax
	test	$4, %cl
	jz	2f
	mov	%r9d, (%rdi,%rax)
2:	mov	%ecx, %eax
	and	$12, %eax
	test	$2, %cl
	jz	3f
	mov	%r10w, (%rdi,%rax)
3:	mov	%ecx, %eax
	and	$14, %eax
	test	$1, %cl
	jz	stored
	mov	%r11b, (%rdi,%rax)
stored:
	add	%rcx, %r13
	jmp	chunk_loop

request_ok:
	mov	%r13d, IMEE_REQ_DONE(%r15)
	movl	$IMEE_STATUS_OK, IMEE_REQ_STATUS(%r15)
next_request:
	inc	%r12d
	jmp	request_loop

batch_done:
	xor	%r15d, %r15d
	mov	%rbp, IMEE_HDR_COMPLETED(%rbx)	/* after every store of the batch: x86 keeps stores ordered */
	jmp	wait

	/*
	 * Exceptions. The stub pushes a dummy error code where the CPU pushes none, then the vector.
	 * A fault inside a request ends that request (the host finishes it in software from `done`)
	 * and the batch goes on; the frame is dropped, not returned from.
	 */
exception_common:
	mov	%r14, %cr3
	test	%r15, %r15
	jz	stray_exception
	mov	%r13d, IMEE_REQ_DONE(%r15)
	mov	(%rsp), %eax
	mov	%eax, IMEE_REQ_VECTOR(%r15)
	mov	8(%rsp), %eax
	mov	%eax, IMEE_REQ_ERROR_CODE(%r15)
	mov	%cr2, %rax
	mov	%rax, IMEE_REQ_CR2(%r15)
	movl	$IMEE_STATUS_FAULT, IMEE_REQ_STATUS(%r15)
	incl	IMEE_HDR_FAULTS(%rbx)
	lea	page_start+IMEE_AGENT_STACK_TOP(%rip), %rsp
	jmp	next_request

stray_exception:			/* the agent's own fault: report it and stop for good */
	mov	page_start+IMEE_AGENT_CONFIG_OFFSET+IMEE_CFG_DATA_VA(%rip), %rbx
	mov	(%rsp), %eax
	mov	%eax, IMEE_HDR_STRAY_VECTOR(%rbx)
	mov	16(%rsp), %rax
	mov	%rax, IMEE_HDR_STRAY_RIP(%rbx)
1:	hlt
	jmp	1b

	.macro	stub vector, has_error_code
	.balign	16
	.if	\has_error_code == 0
	pushq	$0
	.endif
	pushq	$\vector
	jmp	exception_common
	.endm

	.balign	16
vector_stubs:
	stub	0, 0
	stub	1, 0
	stub	2, 0
	stub	3, 0
	stub	4, 0
	stub	5, 0
	stub	6, 0
	stub	7, 0
	stub	8, 1
	stub	9, 0
	stub	10, 1
	stub	11, 1
	stub	12, 1
	stub	13, 1
	stub	14, 1
	stub	15, 0
	stub	16, 0
	stub	17, 1
	stub	18, 0
	stub	19, 0
	stub	20, 0
	stub	21, 1
	stub	22, 0
	stub	23, 0
	stub	24, 0
	stub	25, 0
	stub	26, 0
	stub	27, 0
	stub	28, 0
	stub	29, 1
	stub	30, 1
	stub	31, 0
vector_stubs_end:

	.org	IMEE_AGENT_CONFIG_OFFSET	/* fails to assemble if the code outgrew its room */
config:
	.long	IMEE_AGENT_MAGIC
	.long	IMEE_AGENT_PROTOCOL_VERSION
	.quad	0, 0			/* local_cr3, data_va: the host writes them */
	.fill	5, 8, 0

	.org	IMEE_AGENT_GDT_OFFSET
gdt:
	.quad	0
	.quad	0x00af9a000000ffff	/* 0x08: code, 64-bit, DPL 0 */
	.quad	0x00cf92000000ffff	/* 0x10: data, DPL 0 */

	.org	IMEE_AGENT_IDT_OFFSET
	.fill	IMEE_AGENT_IDT_VECTORS * 16, 1, 0

	.org	IMEE_AGENT_STACK_OFFSET
	.fill	IMEE_AGENT_STACK_TOP - IMEE_AGENT_STACK_OFFSET, 1, 0
	.org	IMEE_PAGE_SIZE

	/* page_start is the section start: entry must stay at offset 0. */
	.set	page_start, entry

	.section .note.GNU-stack, "", @progbits
