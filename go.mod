module github.com/secretheap/secretheap

go 1.26.0

require (
	github.com/awnumar/memguard v0.23.0
	github.com/stretchr/testify v1.12.1
	golang.org/x/crypto v0.41.0
	golang.org/x/sys v0.49.0
)

require (
	github.com/awnumar/memcall v0.4.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)
