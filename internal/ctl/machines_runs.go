package ctl

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/fleet"
)

// runLogPoll is how often machines run-log --follow asks for more.
var runLogPoll = time.Second

// parseRunID checks a run id argument locally (misuse, exit 2).
func parseRunID(s string) (int64, error) {
	id, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || id < 1 {
		return 0, usageErr("run id %q: want a positive number, as bty-ctl machines runs MAC lists", s)
	}
	return id, nil
}

// runClient checks a run id argument and opens a logged-in client;
// errors come back already reported as command name's failure.
func (e *env) runClient(name, arg string) (int64, *client.Client, error) {
	id, err := parseRunID(arg)
	if err != nil {
		return 0, nil, e.fail(name, err, map[string]any{"run": arg})
	}
	c, err := e.authClient()
	if err != nil {
		return 0, nil, e.fail(name, err, map[string]any{"run": id})
	}
	return id, c, nil
}

// runTook is how long a run took (until now while it runs); "-"
// before it started.
func runTook(r fleet.Run, now time.Time) string {
	if r.StartedAt == nil {
		return "-"
	}
	end := now
	if r.EndedAt != nil {
		end = *r.EndedAt
	}
	return end.Sub(*r.StartedAt).Round(time.Second).String()
}

func exitText(p *int) string {
	if p == nil {
		return "-"
	}
	return strconv.Itoa(*p)
}

func newMachinesRunsCmd(e *env) *cobra.Command {
	var limit, offset int
	cmd := &cobra.Command{
		Use:   "runs MAC [--limit N] [--offset N]",
		Short: "List a machine's cijoe workflow runs, newest first",
		Long: `Lists the machine's workflow runs, newest first: id, result (queued,
running, success, failed, timeout, cancelled, interrupted), workflow,
image, when it started (local), how long it took, cijoe's exit status,
whether the run became the machine's known-good baseline, and why it
ended otherwise than success. bty-ctl machines run-log ID prints a
run's log. --json gives every field.`,
		Example: `  bty-ctl machines runs 52:54:00:12:34:56
  bty-ctl machines runs 52:54:00:12:34:56 --limit 1 --json | jq '.runs[0].result'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-runs"
			if limit < 1 || limit > 1000 || offset < 0 {
				return e.fail(name, exitcode.Wrap(exitcode.Usage, errors.New("--limit: 1 to 1000; --offset: 0 or more")), map[string]any{"mac": args[0]})
			}
			mac, c, err := e.macClient(name, args[0])
			if err != nil {
				return err
			}
			page, err := c.Runs(cmd.Context(), mac, limit, offset)
			if err != nil {
				return e.fail(name, e.apiErr("workflow runs of "+mac.String(), c, err), map[string]any{"server": c.Server(), "mac": mac})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "mac": mac, "total": page.Total, "runs": page.Runs})
			}
			if len(page.Runs) == 0 {
				fmt.Fprintf(e.stdout, "%s has no workflow runs yet\n", mac)
				return nil
			}
			tw := newTable(e.stdout)
			fmt.Fprintln(tw, "ID\tRESULT\tWORKFLOW\tIMAGE\tSTARTED\tTOOK\tEXIT\tKNOWN GOOD\tREASON")
			now := time.Now()
			for _, r := range page.Runs {
				kg := "-"
				if r.KnownGood {
					kg = "yes"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Result, dash(r.Workflow), dash(r.Image),
					localTime(r.StartedAt), runTook(r, now), exitText(r.ExitStatus), kg, dash(r.Reason))
			}
			tw.Flush()
			if shown := offset + len(page.Runs); shown < page.Total {
				fmt.Fprintf(e.stderr, "%d of %d runs shown; more with --offset %d\n", len(page.Runs), page.Total, shown)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "how many runs to list (1-1000)")
	cmd.Flags().IntVar(&offset, "offset", 0, "skip this many of the newest first")
	return cmd
}

func newMachinesRunLogCmd(e *env) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "run-log ID [--follow]",
		Short: "Print a workflow run's log; --follow until the run ends",
		Long: `Prints the log of workflow run ID (an id from bty-ctl machines runs MAC)
on stdout, as far as it goes now, and the run's result on stderr.

With --follow it keeps printing what the run adds, asking bty-web every
second, until the run ends, then prints the result on stderr and exits
0 when the run succeeded, 1 otherwise (failed, timeout, cancelled,
interrupted). Ctrl-C stops following; the run goes on (bty-ctl
machines run-cancel ID stops it). --json prints the whole log in the
document's "log" field once it is read (with --follow: once the run
ended). An unknown ID is exit 1; a malformed one exit 2.`,
		Example: `  bty-ctl machines run-log 42
  bty-ctl machines run-log 42 --follow`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-run-log"
			id, c, err := e.runClient(name, args[0])
			if err != nil {
				return err
			}
			return e.runLog(cmd.Context(), name, c, id, follow)
		},
	}
	cmd.Flags().BoolVar(&follow, "follow", false, "keep printing until the run ends; exit 0 only if it succeeded")
	return cmd
}

// runLog prints run id's log, following it until the run ends when
// follow is set.
func (e *env) runLog(ctx context.Context, name string, c *client.Client, id int64, follow bool) error {
	extra := map[string]any{"server": c.Server(), "run": id}
	var log strings.Builder
	var offset, size int64
	var result fleet.RunResult
	stopped := func() error {
		return e.fail(name, fmt.Errorf("stopped following run %d (%s); it goes on on the server: bty-ctl machines run-cancel %d stops it", id, dash(string(result)), id), extra)
	}
	for {
		data, sz, res, err := c.RunLog(ctx, id, offset)
		if err != nil {
			if ctx.Err() != nil {
				return stopped()
			}
			return e.fail(name, e.apiErr(fmt.Sprintf("log of run %d", id), c, err), extra)
		}
		offset += int64(len(data))
		size, result = sz, res
		if e.asJSON {
			log.Write(data)
		} else if _, err := e.stdout.Write(data); err != nil {
			return err
		}
		if len(data) > 0 && offset < size {
			continue // more is there already
		}
		if !follow || result.Ended() {
			break
		}
		select {
		case <-ctx.Done():
			return stopped()
		case <-time.After(runLogPoll):
		}
	}
	extra["result"], extra["size"] = result, size
	var run *api.Run
	if result.Ended() {
		// Best effort: the reason and exit status for the last line.
		if r, err := c.Run(ctx, id); err == nil {
			run = &r
			extra["exit_status"], extra["reason"] = r.ExitStatus, r.Reason
		}
	}
	line := fmt.Sprintf("run %d: %s", id, result)
	if run != nil {
		if run.ExitStatus != nil {
			line += fmt.Sprintf(" (cijoe exit %d)", *run.ExitStatus)
		}
		if run.Reason != "" {
			line += ": " + run.Reason
		}
	}
	if !result.Ended() {
		line += ", log so far " + strconv.FormatInt(size, 10) + " bytes (--follow waits for the end)"
	}
	if follow && result != fleet.RunSuccess {
		err := exitcode.Wrap(exitcode.Failed, errors.New(line))
		if e.asJSON {
			extra["log"] = log.String()
			return jsonError(e, name, err, extra)
		}
		return err
	}
	if e.asJSON {
		extra["ok"], extra["log"] = true, log.String()
		return writeJSON(e, name, extra)
	}
	fmt.Fprintln(e.stderr, line)
	return nil
}

func newMachinesRunCancelCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "run-cancel ID",
		Short: "Cancel a queued or running workflow run",
		Long: `Cancels workflow run ID: bty-web stops its cijoe and records it
cancelled. A run that already ended is exit 1 with its result; an
unknown ID exit 1; a malformed one exit 2.`,
		Example: `  bty-ctl machines run-cancel 42`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-run-cancel"
			id, c, err := e.runClient(name, args[0])
			if err != nil {
				return err
			}
			r, err := c.CancelRun(cmd.Context(), id)
			if err != nil {
				return e.fail(name, e.apiErr(fmt.Sprintf("cancelling run %d", id), c, err), map[string]any{"server": c.Server(), "run": id})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"ok": true, "server": c.Server(), "run": r})
			}
			fmt.Fprintf(e.stdout, "run %d of %s %s", r.ID, r.MAC, r.Result)
			if r.Reason != "" {
				fmt.Fprintf(e.stdout, " (%s)", r.Reason)
			}
			fmt.Fprintln(e.stdout)
			return nil
		},
	}
}
