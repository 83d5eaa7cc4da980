module github.com/secretheap/secretheap

go 1.26
