/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ImEE: the hooks KVM calls.  Everything else of ImEE stays in imee/.
 */
#ifndef __LINUX_KVM_IMEE_H
#define __LINUX_KVM_IMEE_H

#include <linux/fs.h>
#include <linux/imee.h>

/* kvm_dev_ioctl(): system ioctls on /dev/kvm (IMEE_LAUNCH). */
long kvm_imee_dev_ioctl(struct file *filp, unsigned int ioctl,
			unsigned long arg);

#endif /* __LINUX_KVM_IMEE_H */
