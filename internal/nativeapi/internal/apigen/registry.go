// Package apigen generates the native protocol's method table, server dispatch specs and client
// stubs (package nativeapi) from the compiled file descriptor of api/caucus/v1, and maintains the
// registry of method numbers they use.
//
// Method numbers are wire values. The registry (nativeapi/methods.registry) is the only source of
// them: a number, once written there, is never changed or given to another RPC. Each service owns
// blocks of BlockSize numbers; a new RPC takes the lowest free number of its service's blocks
// (or of a new block once they are full), and a new service takes the next unused block. An RPC
// removed from the API keeps its registry line, and so its number, retired. Number 0 is never
// assigned, and numbers stay below MaxMethod: the values above are the stream frame types.
package apigen

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

const (
	// BlockSize is how many method numbers a service's block holds.
	BlockSize = 16
	// MaxMethod bounds method numbers: 0xFF00 and above are stream frame types on the wire.
	MaxMethod = 0xFF00
)

// Registry is the parsed registry file: blocks per service and numbers per procedure.
type Registry struct {
	header  []string          // comment lines kept verbatim at the top
	blocks  map[string][]int  // service full name -> first numbers of its blocks, in order
	methods map[string]uint16 // procedure -> number
}

// Method returns the number of procedure, if it has one.
func (r *Registry) Method(procedure string) (uint16, bool) {
	n, ok := r.methods[procedure]
	return n, ok
}

// ParseRegistry reads a registry file. Duplicate numbers, duplicate procedures, numbers outside
// their service's blocks and overlapping blocks are errors: the file is the wire contract.
func ParseRegistry(rd io.Reader) (*Registry, error) {
	r := &Registry{blocks: make(map[string][]int), methods: make(map[string]uint16)}
	owner := make(map[int]string) // block start -> service
	byNumber := make(map[uint16]string)
	sc := bufio.NewScanner(rd)
	line := 0
	inHeader := true
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			if inHeader {
				r.header = append(r.header, sc.Text())
			}
			continue
		}
		inHeader = false
		f := strings.Fields(text)
		bad := func(format string, args ...any) error {
			return fmt.Errorf("apigen: registry line %d (%q): %s", line, text, fmt.Sprintf(format, args...))
		}
		switch {
		case f[0] == "block" && len(f) == 3:
			start, err := strconv.Atoi(f[2])
			if err != nil || start < 0 || start%BlockSize != 0 || start+BlockSize > MaxMethod {
				return nil, bad("block start must be a multiple of %d below %d", BlockSize, MaxMethod)
			}
			if prev, dup := owner[start]; dup {
				return nil, bad("block %d already belongs to %s", start, prev)
			}
			owner[start] = f[1]
			r.blocks[f[1]] = append(r.blocks[f[1]], start)
		case f[0] == "method" && len(f) == 3:
			n, err := strconv.Atoi(f[1])
			if err != nil || n <= 0 || n >= MaxMethod {
				return nil, bad("method number must be in 1..%d", MaxMethod-1)
			}
			proc := f[2]
			svc, ok := serviceOf(proc)
			if !ok {
				return nil, bad("procedure must look like /package.Service/Method")
			}
			if owner[n-n%BlockSize] != svc {
				return nil, bad("number %d is outside the blocks of %s", n, svc)
			}
			if prev, dup := byNumber[uint16(n)]; dup {
				return nil, bad("number %d already belongs to %s", n, prev)
			}
			if _, dup := r.methods[proc]; dup {
				return nil, bad("%s is numbered twice", proc)
			}
			byNumber[uint16(n)] = proc
			r.methods[proc] = uint16(n)
		default:
			return nil, bad("want \"block <service> <start>\" or \"method <number> <procedure>\"")
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("apigen: reading the registry: %w", err)
	}
	return r, nil
}

// serviceOf returns the service full name of a procedure "/pkg.Service/Method".
func serviceOf(procedure string) (string, bool) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	if !ok || !strings.HasPrefix(procedure, "/") || svc == "" || method == "" || strings.Contains(method, "/") {
		return "", false
	}
	return svc, true
}

// Assign gives procedure a number if it has none: the lowest free number in its service's
// blocks, or in a new block for the service when those are full (or it has none).
func (r *Registry) Assign(procedure string) (uint16, error) {
	if n, ok := r.methods[procedure]; ok {
		return n, nil
	}
	svc, ok := serviceOf(procedure)
	if !ok {
		return 0, fmt.Errorf("apigen: %q is not a procedure name", procedure)
	}
	used := make(map[uint16]bool, len(r.methods))
	for _, n := range r.methods {
		used[n] = true
	}
	for _, start := range r.blocks[svc] {
		for n := max(start, 1); n < start+BlockSize; n++ {
			if !used[uint16(n)] {
				r.methods[procedure] = uint16(n)
				return uint16(n), nil
			}
		}
	}
	taken := make(map[int]bool)
	for _, starts := range r.blocks {
		for _, s := range starts {
			taken[s] = true
		}
	}
	for start := 0; start+BlockSize <= MaxMethod; start += BlockSize {
		if taken[start] {
			continue
		}
		r.blocks[svc] = append(r.blocks[svc], start)
		n := uint16(max(start, 1))
		r.methods[procedure] = n
		return n, nil
	}
	return 0, fmt.Errorf("apigen: no free method block left for %s", procedure)
}

// Format writes the registry back: the header, the blocks by start, the methods by number.
func (r *Registry) Format() []byte {
	var b bytes.Buffer
	for _, h := range r.header {
		b.WriteString(h)
		b.WriteByte('\n')
	}
	type block struct {
		start int
		svc   string
	}
	var blocks []block
	for svc, starts := range r.blocks {
		for _, s := range starts {
			blocks = append(blocks, block{s, svc})
		}
	}
	slices.SortFunc(blocks, func(a, b block) int { return a.start - b.start })
	for _, bl := range blocks {
		fmt.Fprintf(&b, "block %s %d\n", bl.svc, bl.start)
	}
	b.WriteByte('\n')
	procs := make([]string, 0, len(r.methods))
	for p := range r.methods {
		procs = append(procs, p)
	}
	slices.SortFunc(procs, func(a, b string) int { return int(r.methods[a]) - int(r.methods[b]) })
	for _, p := range procs {
		fmt.Fprintf(&b, "method %d %s\n", r.methods[p], p)
	}
	return b.Bytes()
}
