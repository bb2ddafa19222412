package ctl

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/caucus/caucus/client"
)

// endpointStatus is the status of one endpoint, or why it could not be read.
type endpointStatus struct {
	endpoint string
	resp     *client.StatusResponse
	err      error
}

// statusAll asks every endpoint for its status, concurrently so that unreachable members cost
// one timeout in total, not one each. Results are in endpoint order.
func statusAll(e *env, cli *client.Client) []endpointStatus {
	ctx, cancel := e.commandCtx()
	defer cancel()
	eps := cli.Endpoints()
	out := make([]endpointStatus, len(eps))
	var wg sync.WaitGroup
	for i, ep := range eps {
		wg.Go(func() {
			resp, err := cli.Status(ctx, ep)
			out[i] = endpointStatus{endpoint: ep, resp: resp, err: err}
		})
	}
	wg.Wait()
	return out
}

// humanBytes renders n in SI units, like etcdctl's DB SIZE column.
func humanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

func statusCommand() *command {
	return &command{
		name: "status",
		summary: "Prints the status of every endpoint: endpoint, ID, version, DB size, is leader, is learner,\n" +
			"raft term, raft index, raft applied index, errors.",
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			cli, err := e.client()
			if err != nil {
				return err
			}
			results := statusAll(e, cli)
			var errs []error
			var rows [][]string
			type jsonStatus struct {
				Endpoint string
				Status   json.RawMessage
			}
			var js []jsonStatus
			for _, r := range results {
				if r.err != nil {
					errs = append(errs, r.err)
					continue
				}
				s := r.resp
				rows = append(rows, []string{
					r.endpoint, fmt.Sprintf("%x", s.GetHeader().GetMemberId()), s.GetVersion(), humanBytes(s.GetDbSize()),
					strconv.FormatBool(s.GetLeader() != 0 && s.GetLeader() == s.GetHeader().GetMemberId()),
					strconv.FormatBool(s.GetIsLearner()),
					strconv.FormatUint(s.GetRaftTerm(), 10), strconv.FormatUint(s.GetRaftIndex(), 10),
					strconv.FormatUint(s.GetRaftAppliedIndex(), 10), strings.Join(s.GetErrors(), "; "),
				})
				b, err := marshalJSON(s)
				if err != nil {
					return err
				}
				js = append(js, jsonStatus{Endpoint: r.endpoint, Status: b})
			}
			switch e.writeOut {
			case "json":
				b, err := json.Marshal(js)
				if err != nil {
					return fmt.Errorf("encoding statuses as JSON: %w", err)
				}
				fmt.Fprintf(e.stdout, "%s\n", b)
			case "table":
				if len(rows) > 0 {
					printTable(e.stdout, []string{"ENDPOINT", "ID", "VERSION", "DB SIZE", "IS LEADER", "IS LEARNER",
						"RAFT TERM", "RAFT INDEX", "RAFT APPLIED INDEX", "ERRORS"}, rows)
				}
			default:
				for _, r := range rows {
					fmt.Fprintln(e.stdout, strings.Join(r, ", "))
				}
			}
			return errors.Join(errs...)
		},
	}
}

func moveLeaderCommand() *command {
	return &command{
		name: "move-leader", args: "ID",
		summary: "Transfers leadership to member ID (hexadecimal).",
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "ID"); err != nil {
				return err
			}
			target, err := parseMemberID(args[0])
			if err != nil {
				return err
			}
			cli, err := e.client()
			if err != nil {
				return err
			}
			// The current leader is only for the message; the transfer does not need it.
			var from uint64
			for _, r := range statusAll(e, cli) {
				if r.err == nil && r.resp.GetLeader() != 0 {
					from = r.resp.GetLeader()
					break
				}
			}
			ctx, cancel := e.commandCtx()
			defer cancel()
			resp, err := cli.MoveLeader(ctx, target)
			if err != nil {
				return err
			}
			if e.writeOut == "json" {
				return e.printJSON(resp)
			}
			if from != 0 {
				fmt.Fprintf(e.stdout, "Leadership transferred from %x to %x\n", from, target)
			} else {
				fmt.Fprintf(e.stdout, "Leadership transferred to %x\n", target)
			}
			return nil
		},
	}
}

func snapshotSaveCommand() *command {
	return &command{
		name: "save", args: "FILE",
		summary: "Saves a consistent copy of a member's database to FILE. The copy is written to FILE.part,\n" +
			"synced and renamed, so FILE never holds a partial snapshot.",
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "FILE"); err != nil {
				return err
			}
			path := args[0]
			cli, err := e.client()
			if err != nil {
				return err
			}
			n, err := saveSnapshot(e, cli, path)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "Snapshot saved at %s (%s)\n", path, humanBytes(n))
			return nil
		},
	}
}

// saveSnapshot streams the snapshot into path through a temporary file, and makes the rename
// durable.
func saveSnapshot(e *env, cli *client.Client, path string) (n int64, err error) {
	tmp := path + ".part"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("creating snapshot file: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// The snapshot can take longer than --command-timeout; only an interrupt stops it.
	if n, err = cli.SnapshotSave(e.ctx, f); err != nil {
		return n, fmt.Errorf("saving snapshot: %w", err)
	}
	if err = f.Sync(); err != nil {
		return n, fmt.Errorf("syncing %s: %w", tmp, err)
	}
	if err = f.Close(); err != nil {
		return n, fmt.Errorf("closing %s: %w", tmp, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return n, fmt.Errorf("renaming %s to %s: %w", tmp, path, err)
	}
	// Sync the directory so that the rename survives a crash.
	if d, derr := os.Open(filepath.Dir(path)); derr == nil {
		serr := d.Sync()
		d.Close()
		if serr != nil {
			return n, fmt.Errorf("syncing the directory of %s: %w", path, serr)
		}
	}
	return n, nil
}
