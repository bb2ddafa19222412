module github.com/caucus/caucus

go 1.26.8

require (
	connectrpc.com/connect v1.19.1
	github.com/anishathalye/porcupine v1.3.1
	github.com/google/btree v1.1.3
	go.etcd.io/bbolt v1.4.3
	golang.org/x/sys v0.29.0
	google.golang.org/protobuf v1.36.10
)
