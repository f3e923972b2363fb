// SPDX-License-Identifier: GPL-2.0
/*
 * ImEE core: launch and activation of an immersive execution environment
 * on a target KVM VM (out-of-VM introspection at native speed).
 *
 * Linked into kvm.ko.  KVM reaches it through one hook in kvm_dev_ioctl()
 * (IMEE_LAUNCH on /dev/kvm); an ImEE is an anonymous-inode fd with its own
 * file operations (IMEE_ACTIVATE).
 *
 * State of this file: arguments are validated and the session object (a
 * reference on the target VM, the vCPU index and a private copy of the
 * agent page) is created; building the ImEE's EPT and vCPU and running the
 * agent are not implemented yet, so IMEE_ACTIVATE returns -EOPNOTSUPP.
 */

#define pr_fmt(fmt) "kvm-imee: " fmt

#include <linux/anon_inodes.h>
#include <linux/build_bug.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/kvm_host.h>
#include <linux/kvm_imee.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

static_assert(IMEE_AGENT_SIZE == PAGE_SIZE);

struct imee {
	struct kvm *kvm;	/* target; reference held while the fd lives */
	u32 vcpu_index;		/* target vCPU the ImEE follows */
	struct page *agent;	/* private copy of the agent code page */
	struct mutex lock;	/* one activation at a time */
};

static bool imee_is_zero(const void *p, size_t len)
{
	return !memchr_inv(p, 0, len);
}

/*
 * The ImEE needs EPT (execute-only entries for the agent page, A/D off):
 * only VMX with TDP enabled qualifies.
 */
static bool imee_host_supported(void)
{
	return tdp_enabled && kvm_x86_ops.name &&
	       !strcmp(kvm_x86_ops.name, "kvm_intel");
}

static long imee_activate(struct imee *imee, struct imee_activate __user *uarg)
{
	struct imee_activate arg;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.version != IMEE_VERSION)
		return -EPROTONOSUPPORT;
	if (arg.mode != IMEE_MODE_BATCH && arg.mode != IMEE_MODE_POLL)
		return -EINVAL;
	if (arg.flags || !imee_is_zero(arg.reserved, sizeof(arg.reserved)))
		return -EINVAL;

	mutex_lock(&imee->lock);
	/*
	 * TODO: refresh the target CR3 and paging mode from vCPU
	 * imee->vcpu_index, enter the ImEE vCPU, turn exits into a status.
	 */
	mutex_unlock(&imee->lock);
	return -EOPNOTSUPP;
}

static long imee_ioctl(struct file *filp, unsigned int ioctl,
		       unsigned long arg)
{
	struct imee *imee = filp->private_data;

	switch (ioctl) {
	case IMEE_ACTIVATE:
		return imee_activate(imee, (void __user *)arg);
	default:
		return -ENOTTY;
	}
}

static int imee_release(struct inode *inode, struct file *filp)
{
	struct imee *imee = filp->private_data;

	kvm_put_kvm(imee->kvm);
	__free_page(imee->agent);
	kfree(imee);
	return 0;
}

static const struct file_operations imee_fops = {
	.owner		= THIS_MODULE,
	.release	= imee_release,
	.unlocked_ioctl	= imee_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= noop_llseek,
};

/* Validate the target: a live KVM VM with vCPU @vcpu_index. */
static int imee_check_target(struct file *vm_file, u32 vcpu_index)
{
	struct kvm *kvm;

	/* Same test as SEV's intra-host migration: f_op is kvm_vm_fops. */
	if (!file_is_kvm(vm_file))
		return -EBADF;
	kvm = vm_file->private_data;
	if (READ_ONCE(kvm->vm_dead))
		return -EIO;
	/* online_vcpus only grows; vcpu_array[i] is set before it does. */
	if (vcpu_index >= atomic_read(&kvm->online_vcpus) ||
	    !kvm_get_vcpu(kvm, vcpu_index))
		return -EINVAL;
	return 0;
}

static long imee_launch(struct imee_launch __user *uarg)
{
	struct imee_launch arg;
	struct imee *imee;
	struct fd f;
	int r;

	if (copy_from_user(&arg, uarg, sizeof(arg)))
		return -EFAULT;
	if (arg.version != IMEE_VERSION)
		return -EPROTONOSUPPORT;
	if (arg.flags & ~IMEE_LAUNCH_VALID_FLAGS)
		return -EINVAL;
	if (arg.pad || !imee_is_zero(arg.reserved, sizeof(arg.reserved)))
		return -EINVAL;
	if (!(arg.flags & IMEE_LAUNCH_RETARGET) && arg.imee_fd)
		return -EINVAL;
	if (!arg.agent_page)
		return -EINVAL;
	if (arg.flags & IMEE_LAUNCH_RETARGET)
		return -EOPNOTSUPP;	/* TODO: cheap retarget */
	if (!imee_host_supported())
		return -EOPNOTSUPP;

	imee = kzalloc(sizeof(*imee), GFP_KERNEL_ACCOUNT);
	if (!imee)
		return -ENOMEM;
	mutex_init(&imee->lock);
	imee->vcpu_index = arg.vcpu_index;
	imee->agent = alloc_page(GFP_KERNEL_ACCOUNT);
	if (!imee->agent) {
		r = -ENOMEM;
		goto err_free;
	}
	if (copy_from_user(page_address(imee->agent),
			   u64_to_user_ptr(arg.agent_page), IMEE_AGENT_SIZE)) {
		r = -EFAULT;
		goto err_free;
	}

	f = fdget(arg.vm_fd);
	if (!f.file) {
		r = -EBADF;
		goto err_free;
	}
	r = imee_check_target(f.file, arg.vcpu_index);
	if (!r) {
		imee->kvm = f.file->private_data;
		kvm_get_kvm(imee->kvm);
	}
	fdput(f);
	if (r)
		goto err_free;

	r = anon_inode_getfd("kvm-imee", &imee_fops, imee, O_RDWR | O_CLOEXEC);
	if (r < 0) {
		kvm_put_kvm(imee->kvm);
		goto err_free;
	}
	return r;

err_free:
	if (imee->agent)
		__free_page(imee->agent);
	kfree(imee);
	return r;
}

long kvm_imee_dev_ioctl(struct file *filp, unsigned int ioctl,
			unsigned long arg)
{
	switch (ioctl) {
	case IMEE_LAUNCH:
		return imee_launch((void __user *)arg);
	default:
		return -ENOTTY;
	}
}
