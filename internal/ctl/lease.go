package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/caucus/caucus/client"
)

func leaseGrantCommand() *command {
	var idFlag string
	return &command{
		name: "grant", args: "TTL",
		summary: "Creates a lease of TTL seconds and prints its hexadecimal id.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&idFlag, "id", "", "the lease's `ID` (hexadecimal; default: chosen by the cluster)")
		},
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "TTL"); err != nil {
				return err
			}
			ttl, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || ttl <= 0 {
				return usagef("TTL %q is not a positive number of seconds", args[0])
			}
			var id int64
			if idFlag != "" {
				if id, err = parseLeaseID(idFlag); err != nil {
					return err
				}
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				resp, err := cli.GrantID(ctx, id, ttl)
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) {
					fmt.Fprintf(w, "lease %016x granted with TTL(%ds)\n", resp.GetId(), resp.GetTtl())
				})
			})
		},
	}
}

func leaseRevokeCommand() *command {
	return &command{
		name: "revoke", args: "ID",
		summary: "Revokes lease ID and deletes the keys attached to it.",
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "ID"); err != nil {
				return err
			}
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				resp, err := cli.Revoke(ctx, id)
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) { fmt.Fprintf(w, "lease %016x revoked\n", id) })
			})
		},
	}
}

func leaseTimeToLiveCommand() *command {
	var keys bool
	return &command{
		name: "timetolive", args: "ID",
		summary: "Prints the granted and remaining TTL of lease ID.",
		flags:   func(fs *flag.FlagSet) { fs.BoolVar(&keys, "keys", false, "also print the keys attached to the lease") },
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "ID"); err != nil {
				return err
			}
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				var opts []client.LeaseOption
				if keys {
					opts = append(opts, client.WithAttachedKeys())
				}
				resp, err := cli.TimeToLive(ctx, id, opts...)
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) {
					if resp.GetTtl() < 0 {
						fmt.Fprintf(w, "lease %016x already expired\n", id)
						return
					}
					fmt.Fprintf(w, "lease %016x granted with TTL(%ds), remaining(%ds)", id, resp.GetGrantedTtl(), resp.GetTtl())
					if keys {
						ks := make([]string, len(resp.GetKeys()))
						for i, k := range resp.GetKeys() {
							ks[i] = string(k)
						}
						fmt.Fprintf(w, ", attached keys([%s])", strings.Join(ks, " "))
					}
					fmt.Fprintln(w)
				})
			})
		},
	}
}

func leaseListCommand() *command {
	return &command{
		name:    "list",
		summary: "Lists the live leases.",
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				resp, err := cli.Leases(ctx)
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) {
					fmt.Fprintf(w, "found %d leases\n", len(resp.GetIds()))
					for _, id := range resp.GetIds() {
						fmt.Fprintf(w, "%016x\n", id)
					}
				})
			})
		},
	}
}

func leaseKeepAliveCommand() *command {
	var once bool
	return &command{
		name: "keep-alive", args: "ID",
		summary: "Renews lease ID until interrupted (or once with --once), printing each renewal.",
		flags:   func(fs *flag.FlagSet) { fs.BoolVar(&once, "once", false, "renew once and exit") },
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "ID"); err != nil {
				return err
			}
			id, err := parseLeaseID(args[0])
			if err != nil {
				return err
			}
			cli, err := e.client()
			if err != nil {
				return err
			}
			if once {
				ctx, cancel := e.commandCtx()
				defer cancel()
				resp, err := cli.KeepAliveOnce(ctx, id)
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) {
					fmt.Fprintf(w, "lease %016x keepalived with TTL(%d)\n", id, resp.GetTtl())
				})
			}
			ch, err := cli.KeepAlive(e.ctx, id)
			if err != nil {
				return err
			}
			for resp := range ch {
				if err := e.output(resp, func(w io.Writer) {
					fmt.Fprintf(w, "lease %016x keepalived with TTL(%d)\n", id, resp.GetTtl())
				}); err != nil {
					return err
				}
			}
			if e.ctx.Err() != nil {
				return nil // interrupted: the normal way to stop
			}
			return fmt.Errorf("lease %016x: %w", id, errKeepAliveStopped)
		},
	}
}

// errKeepAliveStopped explains why keep-alive stopped without an interrupt.
var errKeepAliveStopped = errors.New("keep-alive stopped: the lease expired or was revoked, or could not be renewed in time")
