package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
)

// marshalJSON encodes m as compact protojson. protojson deliberately varies its whitespace
// between builds to stop byte comparisons; compacting makes the output stable for scripts.
func marshalJSON(m proto.Message) ([]byte, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding %s as JSON: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return nil, fmt.Errorf("compacting JSON: %w", err)
	}
	return buf.Bytes(), nil
}

// printJSON writes m as one line of JSON.
func (e *env) printJSON(m proto.Message) error {
	b, err := marshalJSON(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", b)
	return err
}

// output prints resp as JSON with -w json, and with simple otherwise.
func (e *env) output(resp proto.Message, simple func(w io.Writer)) error {
	if e.writeOut == "json" {
		return e.printJSON(resp)
	}
	simple(e.stdout)
	return nil
}

// kvPrint selects what printKV prints of a key-value.
type kvPrint struct {
	keysOnly, valueOnly bool
}

// printKV prints a key line and a value line, like etcdctl.
func printKV(w io.Writer, kv *caucusv1.KeyValue, p kvPrint) {
	if !p.valueOnly {
		fmt.Fprintf(w, "%s\n", kv.GetKey())
	}
	if !p.keysOnly {
		fmt.Fprintf(w, "%s\n", kv.GetValue())
	}
}

// printTable writes an ASCII table with a header row, like etcdctl -w table.
func printTable(w io.Writer, header []string, rows [][]string) {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	sep := func() {
		for _, wd := range widths {
			fmt.Fprintf(w, "+%s", strings.Repeat("-", wd+2))
		}
		fmt.Fprintln(w, "+")
	}
	line := func(cells []string) {
		for i, c := range cells {
			fmt.Fprintf(w, "| %-*s ", widths[i], c)
		}
		fmt.Fprintln(w, "|")
	}
	sep()
	line(header)
	sep()
	for _, r := range rows {
		line(r)
	}
	sep()
}
