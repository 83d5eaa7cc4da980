package ldpreload

// Version is the version of secretheap: of this Go module, of the
// libsecretheap.so built from the same tree (SECRETHEAP_VERSION in
// cshim/include/secretheap.h, which the library reports through
// secretheap_version() and in its stats), of its pkg-config file, and of
// `secretheap version`. cshim/include/secretheap.h is the one source;
// TestVersionShared checks that this copy, the header's parts and the README
// agree.
const Version = "0.1.0"
