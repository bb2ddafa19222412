// Command gen writes the native protocol's generated files (methods_gen.go, stubs_gen.go) for
// every RPC of api/caucus/v1, from the compiled file descriptor (no protoc needed), and numbers
// new RPCs in methods.registry. It runs from `go generate ./internal/nativeapi` (make generate).
//
// With -check it writes nothing and fails when a file, or the registry, is out of date.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/internal/nativeapi/internal/apigen"
)

func main() {
	dir := flag.String("dir", ".", "the nativeapi package directory")
	check := flag.Bool("check", false, "fail instead of writing when a file is out of date")
	flag.Parse()
	if err := run(*dir, *check); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string, check bool) error {
	files, err := apigen.GenerateDir(dir, caucusv1.File_caucus_v1_caucus_proto)
	if err != nil {
		return err
	}
	stale := 0
	for name, want := range files {
		path := filepath.Join(dir, name)
		have, err := os.ReadFile(path)
		if err == nil && bytes.Equal(have, want) {
			continue
		}
		if check {
			fmt.Fprintf(os.Stderr, "gen: %s is out of date\n", path)
			stale++
			continue
		}
		if err := os.WriteFile(path, want, 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
	}
	if stale > 0 {
		return fmt.Errorf("%d generated files are out of date: run make generate", stale)
	}
	return nil
}
