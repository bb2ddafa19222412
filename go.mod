module github.com/caucus/caucus

go 1.26.8

require (
	connectrpc.com/connect v1.19.1 // indirect
	github.com/anishathalye/porcupine v1.3.1 // indirect
	go.etcd.io/bbolt v1.4.3 // indirect
	golang.org/x/sys v0.29.0 // indirect
	google.golang.org/protobuf v1.36.10 // indirect
)
