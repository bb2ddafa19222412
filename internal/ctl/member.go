package ctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	caucusv1 "github.com/caucus/caucus/api/caucus/v1"
	"github.com/caucus/caucus/client"
)

// memberRow renders a member as the columns of member list.
func memberRow(m *caucusv1.Member) []string {
	status := "started"
	if len(m.GetClientUrls()) == 0 {
		// A member added but not yet running has not published its client URLs.
		status = "unstarted"
	}
	return []string{
		fmt.Sprintf("%x", m.GetId()), status, m.GetName(),
		strings.Join(m.GetPeerUrls(), ","), strings.Join(m.GetClientUrls(), ","),
		strconv.FormatBool(m.GetIsLearner()), gossipState(m.GetGossipState()),
	}
}

// gossipState is the GOSSIP column: the answering member's gossip view of the member.
func gossipState(s string) string {
	if s == "" {
		return "unknown" // gossip off, or the member not heard of yet
	}
	return s
}

func memberListCommand() *command {
	var consistency string
	return &command{
		name:    "list",
		summary: "Lists the members: ID, status, name, peer URLs, client URLs, is learner, gossip state (alive, suspect, dead, left, unknown) as the answering member sees it.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&consistency, "consistency", "l", "l (linearizable) or s (serializable: the answering member's view)")
		},
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 0, 0, "no arguments"); err != nil {
				return err
			}
			var opts []client.OpOption
			switch consistency {
			case "l":
			case "s":
				opts = append(opts, client.WithSerializable())
			default:
				return usagef("--consistency %q is not l or s", consistency)
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				resp, err := cli.MemberList(ctx, opts...)
				if err != nil {
					return err
				}
				var rows [][]string
				for _, m := range resp.GetMembers() {
					rows = append(rows, memberRow(m))
				}
				if e.writeOut == "table" {
					printTable(e.stdout, []string{"ID", "STATUS", "NAME", "PEER ADDRS", "CLIENT ADDRS", "IS LEARNER", "GOSSIP"}, rows)
					return nil
				}
				return e.output(resp, func(w io.Writer) {
					for _, r := range rows {
						fmt.Fprintln(w, strings.Join(r, ", "))
					}
				})
			})
		},
	}
}

func memberAddCommand() *command {
	var peerURLs string
	var learner bool
	return &command{
		name: "add", args: "NAME",
		summary: "Adds member NAME reachable at --peer-urls, and prints the settings to start it with.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&peerURLs, "peer-urls", "", "comma-separated peer `URLs` of the new member (required)")
			fs.BoolVar(&learner, "learner", false, "add the member as a non-voting learner")
		},
		run: func(e *env, args []string) error {
			if err := wantArgs(args, 1, 1, "NAME"); err != nil {
				return err
			}
			var urls []string
			for _, u := range strings.Split(peerURLs, ",") {
				if u = strings.TrimSpace(u); u == "" {
					continue
				}
				if p, err := url.Parse(u); err != nil || p.Host == "" || (p.Scheme != "http" && p.Scheme != "https") {
					return usagef("--peer-urls: %q is not an http(s)://host:port URL", u)
				}
				urls = append(urls, u)
			}
			if len(urls) == 0 {
				return usagef("--peer-urls is required")
			}
			return e.withClient(func(ctx context.Context, cli *client.Client) error {
				add := cli.MemberAdd
				if learner {
					add = cli.MemberAddLearner
				}
				resp, err := add(ctx, args[0], urls)
				if err != nil {
					return err
				}
				return e.output(resp, func(w io.Writer) {
					kind := "Member"
					if learner {
						kind = "Learner member"
					}
					fmt.Fprintf(w, "%s %x added to cluster %x\n\n", kind, resp.GetMember().GetId(), resp.GetHeader().GetClusterId())
					var initial []string
					for _, m := range resp.GetMembers() {
						name := m.GetName()
						if m.GetId() == resp.GetMember().GetId() {
							name = args[0]
						}
						for _, u := range m.GetPeerUrls() {
							initial = append(initial, name+"="+u)
						}
					}
					fmt.Fprintf(w, "CAUCUS_NAME=%q\n", args[0])
					fmt.Fprintf(w, "CAUCUS_INITIAL_CLUSTER=%q\n", strings.Join(initial, ","))
					fmt.Fprintf(w, "CAUCUS_INITIAL_ADVERTISE_PEER_URLS=%q\n", strings.Join(urls, ","))
					fmt.Fprintf(w, "CAUCUS_INITIAL_CLUSTER_STATE=\"existing\"\n")
				})
			})
		},
	}
}

func memberPromoteCommand() *command {
	return &command{
		name: "promote", args: "ID",
		summary: "Promotes learner ID (hexadecimal) to a voting member.",
		run: func(e *env, args []string) error {
			return memberChange(e, args, "promoted in", func(cli *client.Client, e *env, id uint64) (headered, error) {
				ctx, cancel := e.commandCtx()
				defer cancel()
				return cli.MemberPromote(ctx, id)
			})
		},
	}
}

func memberRemoveCommand() *command {
	return &command{
		name: "remove", args: "ID",
		summary: "Removes member ID (hexadecimal) from the cluster.",
		run: func(e *env, args []string) error {
			return memberChange(e, args, "removed from", func(cli *client.Client, e *env, id uint64) (headered, error) {
				ctx, cancel := e.commandCtx()
				defer cancel()
				return cli.MemberRemove(ctx, id)
			})
		},
	}
}

// headered is a response with a header, printable as JSON.
type headered interface {
	proto.Message
	GetHeader() *caucusv1.ResponseHeader
}

// memberChange runs a change of one member given by its id and prints
// "Member ID <what> cluster CLUSTER".
func memberChange(e *env, args []string, what string, do func(*client.Client, *env, uint64) (headered, error)) error {
	if err := wantArgs(args, 1, 1, "ID"); err != nil {
		return err
	}
	id, err := parseMemberID(args[0])
	if err != nil {
		return err
	}
	cli, err := e.client()
	if err != nil {
		return err
	}
	resp, err := do(cli, e, id)
	if err != nil {
		return err
	}
	return e.output(resp, func(w io.Writer) {
		fmt.Fprintf(w, "Member %x %s cluster %x\n", id, what, resp.GetHeader().GetClusterId())
	})
}
