// Command etcd is etcd's own server entry point, built from a pinned module so the
// local target does not depend on a system package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
