package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

func defragCommand() *command {
	return &command{
		name: "defrag",
		summary: "Defragments the database file of every endpoint, one member after the other, and prints its\n" +
			"size before and after. Compaction frees space inside the file for reuse, but only a defrag\n" +
			"gives it back to the file system. A member serves nothing while it defragments (the others\n" +
			"keep the cluster available); a large database takes a while, so --command-timeout does not\n" +
			"apply: only an interrupt, or the member's own limit, ends the wait. A failed member does not\n" +
			"stop the others; the command then exits with an error naming it.",
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			cli, err := e.client()
			if err != nil {
				return err
			}
			type jsonDefrag struct {
				Endpoint   string
				Defragment json.RawMessage
			}
			var (
				errs []error
				rows [][]string
				js   []jsonDefrag
			)
			// Strictly one at a time: two members defragmenting at once in a 3-member cluster
			// would leave it without a quorum.
			for _, ep := range cli.Endpoints() {
				start := time.Now()
				resp, err := cli.Defragment(e.ctx, ep)
				took := time.Since(start).Round(time.Millisecond)
				if err != nil {
					errs = append(errs, fmt.Errorf("defragmenting member %s: %w", ep, err))
					if e.writeOut == "simple" {
						fmt.Fprintf(e.stdout, "Failed to defragment member %s, took %v: %v\n", ep, took, err)
					}
					if e.ctx.Err() != nil {
						break // interrupted: leave the remaining members alone
					}
					continue
				}
				id := fmt.Sprintf("%x", resp.GetHeader().GetMemberId())
				before, after := resp.GetDbSizeBefore(), resp.GetDbSizeAfter()
				switch e.writeOut {
				case "json":
					b, err := marshalJSON(resp)
					if err != nil {
						return err
					}
					js = append(js, jsonDefrag{Endpoint: ep, Defragment: b})
				case "table":
					rows = append(rows, []string{ep, id, humanBytes(before), humanBytes(after), took.String()})
				default:
					fmt.Fprintf(e.stdout, "Finished defragmenting member %s (%s): %s -> %s, took %v\n",
						ep, id, humanBytes(before), humanBytes(after), took)
				}
			}
			switch e.writeOut {
			case "json":
				if js == nil {
					js = []jsonDefrag{} // "[]" rather than "null" when every member failed
				}
				b, err := json.Marshal(js)
				if err != nil {
					return fmt.Errorf("encoding defragment results as JSON: %w", err)
				}
				fmt.Fprintf(e.stdout, "%s\n", b)
			case "table":
				if len(rows) > 0 {
					printTable(e.stdout, []string{"ENDPOINT", "ID", "DB SIZE BEFORE", "DB SIZE AFTER", "TOOK"}, rows)
				}
			}
			return errors.Join(errs...)
		},
	}
}
