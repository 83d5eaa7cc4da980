# vmtest/vmtest.mk — the kernel matrix (vmtest/README.md). Included by the root Makefile.
#   make vmtest              every boot of vmtest/boots.tsv; table in build/vmtest/table.md
#   make vmtest VMTEST=6.12  only the boots whose label matches
.PHONY: vmtest
vmtest:
	vmtest/matrix.sh $(VMTEST)
