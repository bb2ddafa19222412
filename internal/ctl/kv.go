package ctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/caucus/caucus/client"
)

// putFlags are the options of put, also accepted by put lines of txn.
type putFlags struct {
	lease  string
	prevKV bool
	events eventFlag
}

func (f *putFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.lease, "lease", "", "attach the key to lease `ID` (hexadecimal)")
	fs.BoolVar(&f.prevKV, "prev-kv", false, "print the previous key-value")
	f.events.register(fs)
}

func (f *putFlags) opts() ([]client.OpOption, error) {
	var opts []client.OpOption
	if f.lease != "" {
		id, err := parseLeaseID(f.lease)
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithLease(id))
	}
	if f.prevKV {
		opts = append(opts, client.WithPrevKV())
	}
	return opts, nil
}

// getFlags are the options of get, also accepted by get lines of txn.
type getFlags struct {
	prefix, fromKey                bool
	limit, rev                     int64
	consistency                    string
	keysOnly, countOnly, valueOnly bool
}

func (f *getFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.prefix, "prefix", false, "get the keys with prefix KEY")
	fs.BoolVar(&f.fromKey, "from-key", false, "get the keys >= KEY")
	fs.Int64Var(&f.limit, "limit", 0, "return at most `N` keys (0: no limit)")
	fs.Int64Var(&f.rev, "rev", 0, "read at revision `N` (0: the latest)")
	fs.StringVar(&f.consistency, "consistency", "l", "l (linearizable) or s (serializable: local, possibly stale)")
	fs.BoolVar(&f.keysOnly, "keys-only", false, "print only the keys")
	fs.BoolVar(&f.countOnly, "count-only", false, "print only the number of keys")
	fs.BoolVar(&f.valueOnly, "print-value-only", false, "print only the values")
}

func (f *getFlags) opts(nargs int) ([]client.OpOption, error) {
	var opts []client.OpOption
	if err := rangeExclusive(nargs, f.prefix, f.fromKey); err != nil {
		return nil, err
	}
	if f.prefix {
		opts = append(opts, client.WithPrefix())
	}
	if f.fromKey {
		opts = append(opts, client.WithFromKey())
	}
	if f.limit < 0 || f.rev < 0 {
		return nil, usagef("--limit and --rev must not be negative")
	}
	if f.limit > 0 {
		opts = append(opts, client.WithLimit(f.limit))
	}
	if f.rev > 0 {
		opts = append(opts, client.WithRev(f.rev))
	}
	switch f.consistency {
	case "l":
	case "s":
		opts = append(opts, client.WithSerializable())
	default:
		return nil, usagef("--consistency %q is not l or s", f.consistency)
	}
	if f.keysOnly && f.valueOnly {
		return nil, usagef("--keys-only and --print-value-only exclude each other")
	}
	if f.keysOnly {
		opts = append(opts, client.WithKeysOnly())
	}
	if f.countOnly {
		opts = append(opts, client.WithCountOnly())
	}
	return opts, nil
}

// delFlags are the options of del, also accepted by del lines of txn.
type delFlags struct {
	prefix, fromKey, prevKV bool
	events                  eventFlag
}

func (f *delFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.prefix, "prefix", false, "delete the keys with prefix KEY")
	fs.BoolVar(&f.fromKey, "from-key", false, "delete the keys >= KEY")
	fs.BoolVar(&f.prevKV, "prev-kv", false, "print the deleted key-values")
	f.events.register(fs)
}

func (f *delFlags) opts(nargs int) ([]client.OpOption, error) {
	if err := rangeExclusive(nargs, f.prefix, f.fromKey); err != nil {
		return nil, err
	}
	var opts []client.OpOption
	if f.prefix {
		opts = append(opts, client.WithPrefix())
	}
	if f.fromKey {
		opts = append(opts, client.WithFromKey())
	}
	if f.prevKV {
		opts = append(opts, client.WithPrevKV())
	}
	return opts, nil
}

// rangeExclusive checks that at most one of END, --prefix and --from-key selects the range.
func rangeExclusive(nargs int, prefix, fromKey bool) error {
	n := 0
	for _, b := range []bool{nargs > 1, prefix, fromKey} {
		if b {
			n++
		}
	}
	if n > 1 {
		return usagef("END, --prefix and --from-key exclude each other")
	}
	return nil
}

func putCommand() *command {
	var f putFlags
	return &command{
		name: "put", args: "KEY [VALUE]",
		summary: "Puts VALUE under KEY (VALUE is read from standard input when omitted). Prints OK.",
		flags:   f.register,
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 2, "KEY [VALUE]"); err != nil {
				return err
			}
			opts, err := f.opts()
			if err != nil {
				return err
			}
			value := ""
			if len(args) == 2 {
				value = args[1]
			} else {
				if e.stdin == nil {
					return usagef("no VALUE and no standard input")
				}
				b, err := io.ReadAll(e.stdin)
				if err != nil {
					return fmt.Errorf("reading the value from standard input: %w", err)
				}
				value = string(b)
			}
			if evs := f.events.events(args[0]); len(evs) > 0 {
				opts = append(opts, client.WithEvents(evs...))
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				resp, err := cli.Put(ctx, args[0], value, opts...)
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) {
					fmt.Fprintln(w, "OK")
					if f.prevKV && resp.GetPrevKv() != nil {
						printKV(w, resp.GetPrevKv(), kvPrint{})
					}
					printEventIDs(w, resp.GetEventIds())
				})
			})
		},
	}
}

func getCommand() *command {
	var f getFlags
	return &command{
		name: "get", args: "KEY [END]",
		summary: "Gets KEY, or the keys in [KEY, END). Prints each key and its value on two lines.",
		flags:   f.register,
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 2, "KEY [END]"); err != nil {
				return err
			}
			opts, err := f.opts(len(args))
			if err != nil {
				return err
			}
			if len(args) == 2 {
				opts = append(opts, client.WithRange(args[1]))
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				resp, err := cli.Get(ctx, args[0], opts...)
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) {
					if f.countOnly {
						fmt.Fprintln(w, resp.GetCount())
						return
					}
					for _, kv := range resp.GetKvs() {
						printKV(w, kv, kvPrint{keysOnly: f.keysOnly, valueOnly: f.valueOnly})
					}
				})
			})
		},
	}
}

func delCommand() *command {
	var f delFlags
	return &command{
		name: "del", args: "KEY [END]",
		summary: "Deletes KEY, or the keys in [KEY, END). Prints the number of deleted keys.",
		flags:   f.register,
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 2, "KEY [END]"); err != nil {
				return err
			}
			opts, err := f.opts(len(args))
			if err != nil {
				return err
			}
			if len(args) == 2 {
				opts = append(opts, client.WithRange(args[1]))
			}
			if evs := f.events.events(args[0]); len(evs) > 0 {
				opts = append(opts, client.WithEvents(evs...))
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				resp, err := cli.Delete(ctx, args[0], opts...)
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) {
					fmt.Fprintln(w, resp.GetDeleted())
					for _, kv := range resp.GetPrevKvs() {
						printKV(w, kv, kvPrint{})
					}
					printEventIDs(w, resp.GetEventIds())
				})
			})
		},
	}
}

func compactionCommand() *command {
	return &command{
		name: "compaction", args: "REV",
		summary: "Discards the versions of keys older than revision REV.",
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "REV"); err != nil {
				return err
			}
			rev, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || rev <= 0 {
				return usagef("REV %q is not a positive revision", args[0])
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				resp, err := cli.Compact(ctx, rev)
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) { fmt.Fprintf(w, "compacted revision %d\n", rev) })
			})
		},
	}
}

// parseLeaseID parses a hexadecimal lease id ("0x" optional), as printed by lease grant.
func parseLeaseID(s string) (int64, error) {
	id, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 64)
	if err != nil || id == 0 {
		return 0, usagef("lease ID %q is not a non-zero hexadecimal id", s)
	}
	return int64(id), nil
}

// parseMemberID parses a hexadecimal member id ("0x" optional), as printed by member list.
func parseMemberID(s string) (uint64, error) {
	id, err := strconv.ParseUint(strings.TrimPrefix(strings.ToLower(s), "0x"), 16, 64)
	if err != nil || id == 0 {
		return 0, usagef("member ID %q is not a non-zero hexadecimal id", s)
	}
	return id, nil
}
