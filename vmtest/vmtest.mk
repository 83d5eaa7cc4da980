# vmtest.mk — the kernel matrix: real Debian kernels booted under QEMU (TCG),
# the project run inside each (vmtest/matrix.sh). Included by the root Makefile.
#
#   make vmtest         every boot of vmtest/boots.tsv × every scenario of
#                       vmtest/scenarios.sh; prints the table and writes
#                       build/vmtest/table.md; fails when a row that
#                       vmtest/expect.tsv does not excuse fails
#   VMTEST_ONLY=regex   only the context/scenario rows matching it
#
# Kernels are downloaded with apt-get download into /var/cache/secretheap-vmtest
# (kept between runs); qemu-system-x86 and busybox-static are installed if missing.
.PHONY: vmtest
vmtest:
	vmtest/matrix.sh $(VMTEST_BOOTS)
