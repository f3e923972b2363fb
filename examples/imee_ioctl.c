// SPDX-License-Identifier: GPL-2.0
/*
 * imee_ioctl: the ImEE ioctls from a plain C program (<linux/imee.h>, kernel/API.md).
 *
 *   imee_ioctl [--pid QEMU_PID] [--gpa GPA]      (GPA: 8-byte aligned, default 0x100000)
 *
 * Asks /dev/kvm whether it is the patched kvm-intel (IMEE_QUERY), builds a one-vCPU shell VM
 * with a tiny agent of its own (64-bit mode, identity page tables: "movabs rax, [GPA];
 * movabs [out], rax; hlt"), launches an ImEE with it on a target VM (IMEE_LAUNCH), activates it
 * (IMEE_ACTIVATE) and prints the 8 bytes the agent read at target GPA through the ImEE's EPT.
 *
 * The target is QEMU process QEMU_PID's KVM VM fd (taken with pidfd_getfd(2), as libimee does),
 * or without --pid a 2 MiB VM created here whose memory holds a known pattern: then the value
 * read must be the pattern's, and is checked.
 *
 * Exit status: 0 success, 1 failure, 2 bad usage, 77 this host cannot run ImEEs (no /dev/kvm,
 * KVM without the ImEE patch, or a CPU without VMX+EPT): the test harness's "skip" -- unless
 * IMEE_REQUIRE_KERNEL=1 (the VT-x lab), where that is a failure (1), as for the C++ tests.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/imee.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define EXIT_SKIP 77

/* The shell's memory: one 64 KiB memslot at SHELL_GPA, far from any target's RAM. */
#define SHELL_GPA (1ULL << 39)
#define SHELL_BYTES 0x10000
#define CODE_OFF 0x1000  /* the agent's code */
#define AGENT_OFF 0x2000 /* the page launched as the agent's home (agent_local_gpa) */
#define OUT_OFF 0x3000   /* where the agent stores what it read; stack below it */
#define PT_OFF 0x4000    /* page tables: PML4, two PDPTs, five page directories */

/* The own target: 2 MiB at GPA 0, each 8-byte word i holding PATTERN(i). */
#define TARGET_BYTES (2ULL << 20)
#define PATTERN(i) (0x9e3779b97f4a7c15ULL * ((i) + 1))

/* This host cannot run ImEEs: skip, or fail where the ImEE kernel is required. */
static int skip(void)
{
	const char *required = getenv("IMEE_REQUIRE_KERNEL");

	if (required && !strcmp(required, "1")) {
		fprintf(stderr, "imee_ioctl: FAIL: IMEE_REQUIRE_KERNEL=1\n");
		return 1;
	}
	return EXIT_SKIP;
}

static int die(const char *what)
{
	fprintf(stderr, "imee_ioctl: %s: %s\n", what, strerror(errno));
	return 1;
}

/* The KVM VM fd QEMU process `pid` holds, duplicated into this process; -1 on failure. */
static int qemu_vm_fd(pid_t pid)
{
	char dir[64], path[320], link[64];
	int pidfd, vm = -1, found = -1, count = 0;
	struct dirent *e;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		ssize_t n;

		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		n = readlink(path, link, sizeof(link) - 1);
		if (n < 0)
			continue;
		link[n] = 0;
		if (!strcmp(link, "anon_inode:kvm-vm")) {
			found = atoi(e->d_name);
			count++;
		}
	}
	closedir(d);
	if (count != 1) {
		fprintf(stderr, "imee_ioctl: process %d holds %d KVM VM fds (need exactly one)\n",
			(int)pid, count);
		errno = ESRCH;
		return -1;
	}
	pidfd = syscall(SYS_pidfd_open, pid, 0);
	if (pidfd < 0)
		return -1;
	vm = syscall(SYS_pidfd_getfd, pidfd, found, 0);
	close(pidfd);
	return vm;
}

/* KVM's supported CPUID on the vCPU: long mode and NX need it. */
static int set_supported_cpuid(int kvm, int vcpu)
{
	struct kvm_cpuid2 *cpuid = NULL;
	unsigned int n;
	int r = -1;

	for (n = 64; n <= 4096; n *= 2) {
		free(cpuid);
		cpuid = calloc(1, sizeof(*cpuid) + n * sizeof(struct kvm_cpuid_entry2));
		if (!cpuid)
			return -1;
		cpuid->nent = n;
		if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) == 0) {
			r = ioctl(vcpu, KVM_SET_CPUID2, cpuid);
			break;
		}
		if (errno != E2BIG)
			break;
	}
	free(cpuid);
	return r;
}

/* 64-bit ring 0, flat segments, paging with the shell's identity tables. */
static int enter_long_mode(int vcpu)
{
	struct kvm_segment code = { .limit = 0xffffffff, .selector = 8, .type = 11,
				    .present = 1, .s = 1, .l = 1, .g = 1 };
	struct kvm_segment data = code;
	struct kvm_sregs sregs;
	struct kvm_regs regs = { .rip = SHELL_GPA + CODE_OFF, .rsp = SHELL_GPA + OUT_OFF,
				 .rflags = 2 };

	if (ioctl(vcpu, KVM_GET_SREGS, &sregs))
		return -1;
	data.selector = 16;
	data.type = 3;
	data.l = 0;
	data.db = 1;
	sregs.cs = code;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
	memset(&sregs.tr, 0, sizeof(sregs.tr)); /* 64-bit busy TSS, no LDT */
	sregs.tr.limit = 0x67;
	sregs.tr.type = 11;
	sregs.tr.present = 1;
	memset(&sregs.ldt, 0, sizeof(sregs.ldt));
	sregs.ldt.type = 2;
	sregs.ldt.unusable = 1;
	/* Every exception of an ImEE vCPU is intercepted: empty tables will do. */
	sregs.gdt.base = sregs.idt.base = SHELL_GPA + PT_OFF + 0x8000;
	sregs.gdt.limit = sregs.idt.limit = 0xff;
	sregs.cr0 = 0x80010031; /* PG, WP, NE, ET, PE */
	sregs.cr3 = SHELL_GPA + PT_OFF;
	sregs.cr4 = 0x20; /* PAE */
	sregs.efer = 0xd00; /* LME, LMA, NXE */
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs))
		return -1;
	return ioctl(vcpu, KVM_SET_REGS, &regs);
}

/*
 * Identity page tables (linear = guest-physical, 2 MiB pages) for the first 4 GiB, where the
 * target's RAM starts, and for the first GiB at SHELL_GPA, where the shell is.
 */
static void build_page_tables(uint8_t *shell)
{
	uint64_t *pml4 = (uint64_t *)(shell + PT_OFF);
	uint64_t *low = pml4 + 512, *high = pml4 + 1024, *pd = pml4 + 1536;
	const uint64_t pw = 0x23, large = 0xe3; /* P W A; P W A D PS */
	uint64_t i, j;

	pml4[0] = (SHELL_GPA + PT_OFF + 0x1000) | pw;
	pml4[1] = (SHELL_GPA + PT_OFF + 0x2000) | pw; /* SHELL_GPA = 512 GiB: PML4 index 1 */
	for (i = 0; i < 5; i++) {
		uint64_t base = i < 4 ? i << 30 : SHELL_GPA;

		if (i < 4)
			low[i] = (SHELL_GPA + PT_OFF + 0x3000 + i * 0x1000) | pw;
		else
			high[0] = (SHELL_GPA + PT_OFF + 0x3000 + i * 0x1000) | pw;
		for (j = 0; j < 512; j++)
			pd[i * 512 + j] = (base + (j << 21)) | large;
	}
}

/* movabs rax, [gpa]; movabs [out], rax; hlt */
static void build_agent(uint8_t *code, uint64_t gpa, uint64_t out)
{
	code[0] = 0x48;
	code[1] = 0xa1;
	memcpy(code + 2, &gpa, 8);
	code[10] = 0x48;
	code[11] = 0xa3;
	memcpy(code + 12, &out, 8);
	code[20] = 0xf4;
}

static const char *result_name(uint32_t status)
{
	static const char *const names[] = { "NONE", "DONE", "FAULT", "TARGET_GONE",
					     "INTERRUPTED" };

	return status <= IMEE_RESULT_MAX ? names[status] : "?";
}

int main(int argc, char **argv)
{
	struct imee_query query = { 0 };
	struct imee_launch launch = { 0 };
	struct imee_activate act = { 0 };
	struct kvm_userspace_memory_region slot = { 0 };
	uint64_t gpa = 0x100000, value;
	uint8_t *shell, *target_mem = NULL;
	int kvm, shell_vm, vcpu, target_vm, target_vcpu = -1, imee, i;
	pid_t pid = 0;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--pid") && i + 1 < argc)
			pid = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--gpa") && i + 1 < argc)
			gpa = strtoull(argv[++i], NULL, 0);
		else {
			fprintf(stderr, "usage: imee_ioctl [--pid QEMU_PID] [--gpa GPA]\n");
			return 2;
		}
	}
	/* The agent's page tables map linear = physical for the first 4 GiB only. */
	if (gpa & 7 || gpa + 8 > (pid ? 4ULL << 30 : TARGET_BYTES)) {
		fprintf(stderr, "imee_ioctl: --gpa must be 8-byte aligned and below %s\n",
			pid ? "4 GiB" : "2 MiB (the own target's size)");
		return 2;
	}

	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		fprintf(stderr, "imee_ioctl: SKIP: cannot open /dev/kvm: %s\n", strerror(errno));
		return skip();
	}
	/* A KVM without ImEE fails IMEE_QUERY with EINVAL: hence the magic check. */
	errno = 0;
	if (ioctl(kvm, IMEE_QUERY, &query) || query.magic != IMEE_MAGIC) {
		fprintf(stderr, "imee_ioctl: SKIP: this KVM is not the ImEE-patched kvm-intel "
				"(IMEE_QUERY: %s)\n", errno ? strerror(errno) : "no magic");
		return skip();
	}
	printf("IMEE_QUERY: version %u, features 0x%" PRIx64 ", max_gpa 0x%" PRIx64 "\n",
	       query.version, (uint64_t)query.features, (uint64_t)query.max_gpa);
	if (!(query.features & IMEE_FEATURE_HOST)) {
		fprintf(stderr, "imee_ioctl: SKIP: this CPU cannot run ImEEs (VMX with EPT)\n");
		return skip();
	}

	/* The target. */
	if (pid) {
		target_vm = qemu_vm_fd(pid);
		if (target_vm < 0)
			return die("the target QEMU's VM fd (pidfd_getfd)");
	} else {
		target_vm = ioctl(kvm, KVM_CREATE_VM, 0);
		if (target_vm < 0)
			return die("KVM_CREATE_VM (target)");
		target_mem = mmap(NULL, TARGET_BYTES, PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (target_mem == MAP_FAILED)
			return die("mmap (target)");
		for (i = 0; i < (int)(TARGET_BYTES / 8); i++)
			((uint64_t *)target_mem)[i] = PATTERN((uint64_t)i);
		slot.memory_size = TARGET_BYTES;
		slot.userspace_addr = (uintptr_t)target_mem;
		if (ioctl(target_vm, KVM_SET_USER_MEMORY_REGION, &slot))
			return die("KVM_SET_USER_MEMORY_REGION (target)");
		target_vcpu = ioctl(target_vm, KVM_CREATE_VCPU, 0); /* vcpu_index 0 must exist */
		if (target_vcpu < 0)
			return die("KVM_CREATE_VCPU (target)");
	}

	/* The shell: one memslot, one vCPU that has never run. */
	shell = mmap(NULL, SHELL_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
		     0);
	if (shell == MAP_FAILED)
		return die("mmap (shell)");
	build_page_tables(shell);
	build_agent(shell + CODE_OFF, gpa, SHELL_GPA + OUT_OFF);
	shell_vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (shell_vm < 0)
		return die("KVM_CREATE_VM (shell)");
	memset(&slot, 0, sizeof(slot));
	slot.guest_phys_addr = SHELL_GPA;
	slot.memory_size = SHELL_BYTES;
	slot.userspace_addr = (uintptr_t)shell;
	if (ioctl(shell_vm, KVM_SET_USER_MEMORY_REGION, &slot))
		return die("KVM_SET_USER_MEMORY_REGION (shell)");
	vcpu = ioctl(shell_vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		return die("KVM_CREATE_VCPU (shell)");
	if (set_supported_cpuid(kvm, vcpu))
		return die("KVM_SET_CPUID2");
	if (enter_long_mode(vcpu))
		return die("KVM_SET_SREGS/KVM_SET_REGS");

	/* The agent's home: a target page the agent does not read (a data access there faults). */
	launch.version = IMEE_VERSION;
	launch.vm_fd = target_vm;
	launch.vcpu_index = 0;
	launch.shell_fd = shell_vm;
	launch.imee_fd = -1;
	launch.agent_gpa = (gpa & ~0xfffULL) == 0x1000 ? 0x2000 : 0x1000;
	launch.agent_local_gpa = SHELL_GPA + AGENT_OFF;
	imee = ioctl(kvm, IMEE_LAUNCH, &launch);
	if (imee < 0)
		return die("IMEE_LAUNCH");
	printf("IMEE_LAUNCH: ImEE fd %d on %s\n", imee, pid ? "the QEMU's VM" : "an own 2 MiB VM");

	act.version = IMEE_VERSION;
	act.mode = IMEE_ACTIVATE_BATCH;
	if (ioctl(imee, IMEE_ACTIVATE, &act))
		return die("IMEE_ACTIVATE");
	printf("IMEE_ACTIVATE: %s, %llu exits (%llu EPT violations)\n", result_name(act.status),
	       (unsigned long long)act.exits, (unsigned long long)act.exits_ept_violation);
	if (act.status != IMEE_RESULT_DONE) {
		fprintf(stderr, "imee_ioctl: activation ended %s: fault kind %u info 0x%x addr "
				"0x%llx\n", result_name(act.status), act.fault_kind, act.fault_info,
			(unsigned long long)act.fault_addr);
		return 1;
	}
	memcpy(&value, shell + OUT_OFF, 8);
	printf("target GPA 0x%" PRIx64 ": 0x%016" PRIx64 "\n", gpa, value);
	if (!pid) {
		if (value != PATTERN(gpa / 8)) {
			fprintf(stderr, "imee_ioctl: FAIL: expected 0x%016llx\n",
				(unsigned long long)PATTERN(gpa / 8));
			return 1;
		}
		printf("imee_ioctl: OK (the value the target VM's memory holds)\n");
	}
	close(imee);
	close(vcpu);
	close(shell_vm);
	if (target_vcpu >= 0)
		close(target_vcpu);
	close(target_vm);
	close(kvm);
	return 0;
}
