package ctl

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/fleet"
)

// bty-ctl rollout (docs/reference.md, "Rollouts"): start a rollout of a
// new image, follow it, pause, resume or abort it.

func newRolloutCmd(e *env) *cobra.Command {
	return groupCmd(e, "rollout", "Roll a new image out to the machines a label selector picks",
		`A rollout reflashes the machines a label selector picks with a new
image: the canaries first and alone, then the rest at most --max-parallel
at a time, each waiting for ready (and, for cijoe-online machines, a
successful workflow run). It stops on the first failure (or once more
than --max-failures machines failed). bty-web runs it: bty-ctl only
starts, follows, pauses, resumes and aborts it.`,
		newRolloutStartCmd(e), newRolloutStatusCmd(e), newRolloutListCmd(e),
		newRolloutActionCmd(e, "pause", "Pause a rollout: start no new reflash (those running finish)"),
		newRolloutActionCmd(e, "resume", "Resume a paused rollout"),
		newRolloutActionCmd(e, "abort", "Abort a rollout: the machines not started are skipped and keep their image"))
}

func newRolloutStartCmd(e *env) *cobra.Command {
	var selector, image string
	var canary, maxParallel, maxFailures int
	var wait bool
	cmd := &cobra.Command{
		Use:   "start --selector SEL --image NAME [--canary N] [--max-parallel N] [--max-failures N] [--wait]",
		Short: "Start a rollout of an image to the machines a selector picks",
		Long: `Starts a rollout (POST /rollouts): the selector (label syntax, as
bty-ctl machines list --selector) is resolved once, now, into a list
ordered by MAC with the --canary first machines as canaries (quarantined
machines are skipped). bty-web reflashes the canaries at once, and the
rest once every canary succeeded, at most --max-parallel at a time. Each
machine's record gets the image when its turn comes.

--wait follows the rollout (its event stream) and prints a line per
change of a machine's state; it exits 0 when the rollout succeeded and 1
when it failed or was aborted, with the reason. Ctrl-C stops following;
the rollout goes on on the server (bty-ctl rollout abort ID stops it).`,
		Example: `  bty-ctl rollout start --selector role=ci --image new.img.zst --max-parallel 2 --canary 1 --wait
  bty-ctl rollout start --selector 'rack in (a,b)' --image new.img.zst --max-failures 2 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "rollout-start"
			switch {
			case strings.TrimSpace(selector) == "":
				return e.fail(name, usageErr("--selector is required: the labels of the machines to reflash, like role=ci"), nil)
			case strings.TrimSpace(image) == "":
				return e.fail(name, usageErr("--image is required: an image of the catalog (bty-ctl images list)"), nil)
			case canary < 0 || canary > fleet.MaxRolloutCanary:
				return e.fail(name, usageErr("--canary %d: want 0 to %d", canary, fleet.MaxRolloutCanary), nil)
			case maxParallel < 1 || maxParallel > fleet.MaxRolloutParallel:
				return e.fail(name, usageErr("--max-parallel %d: want 1 to %d", maxParallel, fleet.MaxRolloutParallel), nil)
			case maxFailures < 0:
				return e.fail(name, usageErr("--max-failures %d: want 0 (stop on the first failure) or more", maxFailures), nil)
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, nil)
			}
			r, err := c.StartRollout(cmd.Context(), api.RolloutRequest{Selector: selector, Image: image,
				Canary: &canary, MaxParallel: &maxParallel, MaxFailures: &maxFailures})
			if err != nil {
				return e.fail(name, e.apiErr("starting the rollout", c, err), map[string]any{"server": c.Server()})
			}
			if !e.asJSON {
				fmt.Fprintf(e.stdout, "rollout %d of %s over %d machines (selector %s): %s\n", r.ID, r.Image, len(r.Machines), r.Selector, canaryText(r))
			}
			if !wait {
				if e.asJSON {
					return writeJSON(e, name, map[string]any{"server": c.Server(), "rollout": r})
				}
				fmt.Fprintf(e.stdout, "follow it with: bty-ctl rollout status %d, or its page /ui/rollouts/%d\n", r.ID, r.ID)
				return nil
			}
			return e.waitRollout(cmd.Context(), name, c, r)
		},
	}
	f := cmd.Flags()
	f.StringVar(&selector, "selector", "", "the machines: a label selector, like role=ci (required)")
	f.StringVar(&image, "image", "", "the image of the catalog to roll out (required)")
	f.IntVar(&canary, "canary", 1, "how many machines go first, alone (0-64)")
	f.IntVar(&maxParallel, "max-parallel", 1, "at most this many machines in flight after the canaries (1-64)")
	f.IntVar(&maxFailures, "max-failures", 0, "stop once more than this many machines failed (0: on the first)")
	f.BoolVar(&wait, "wait", false, "follow the rollout, a line per change; exit 1 unless it succeeds")
	return cmd
}

// canaryText names r's canaries.
func canaryText(r api.Rollout) string {
	var macs []string
	for _, m := range r.Machines {
		if m.Canary {
			macs = append(macs, m.MAC.String())
		}
	}
	if len(macs) == 0 {
		return "no canary"
	}
	return "canary " + strings.Join(macs, ", ")
}

// waitRollout follows r until it ends, printing each machine's state
// changes, and fails unless it succeeded.
func (e *env) waitRollout(ctx context.Context, name string, c *client.Client, r api.Rollout) error {
	out := io.Discard
	if !e.asJSON {
		out = e.stdout
	}
	seen := map[fleet.MAC]string{}
	start := time.Now()
	last := r
	show := func(r api.Rollout) {
		for _, m := range r.Machines {
			line := string(m.State) + "\x00" + m.Detail
			if seen[m.MAC] == line {
				continue
			}
			seen[m.MAC] = line
			fmt.Fprintf(out, "  %-8s %s  %-9s %s\n", "+"+time.Since(start).Round(time.Second).String(), m.MAC, m.State, machineNote(m))
		}
	}
	show(r)
	err := c.WatchRollout(ctx, r.ID, func(got api.Rollout) error {
		last = got
		show(got)
		return nil
	})
	extra := map[string]any{"server": c.Server(), "rollout": last}
	if err != nil {
		if ctx.Err() != nil {
			return e.fail(name, fmt.Errorf("rollout %d: interrupted while %s; it goes on on the server (bty-ctl rollout abort %d stops it)", r.ID, last.State, r.ID), extra)
		}
		return e.fail(name, e.apiErr(fmt.Sprintf("following rollout %d", r.ID), c, err), extra)
	}
	summary := fmt.Sprintf("%d succeeded, %d failed, %d skipped of %d", last.Count(fleet.RMSucceeded), last.Count(fleet.RMFailed),
		last.Count(fleet.RMSkipped), len(last.Machines))
	if last.State != fleet.RolloutSucceeded {
		return e.fail(name, fmt.Errorf("rollout %d %s: %s (%s)", r.ID, last.State, dash(last.Reason), summary), extra)
	}
	if e.asJSON {
		return writeJSON(e, name, extra)
	}
	fmt.Fprintf(e.stdout, "rollout %d succeeded in %s: %s\n", r.ID, time.Since(start).Round(time.Second), summary)
	return nil
}

// machineNote is a rollout machine's flash, run and detail.
func machineNote(m api.RolloutMachine) string {
	var parts []string
	if m.Canary {
		parts = append(parts, "canary")
	}
	if m.FlashID != 0 {
		parts = append(parts, "flash "+strconv.FormatInt(m.FlashID, 10))
	}
	if m.RunID != 0 {
		parts = append(parts, "run "+strconv.FormatInt(m.RunID, 10))
	}
	t := strings.Join(parts, ", ")
	if m.Detail != "" {
		if t != "" {
			t += ": "
		}
		t += m.Detail
	}
	return t
}

// rolloutIDArg parses a rollout id argument (misuse when it is not one).
func rolloutIDArg(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, usageErr("rollout id %q: want a positive number (bty-ctl rollout list)", s)
	}
	return id, nil
}

func newRolloutStatusCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "status ID",
		Short: "Show a rollout and its machines' states",
		Long: `Shows a rollout (GET /rollouts/{id}): its state, settings and reason,
and each machine in its order with its state, flash, workflow run and
detail. --json prints the whole rollout.`,
		Example: `  bty-ctl rollout status 3
  bty-ctl rollout status 3 --json | jq -r '.rollout.machines[] | select(.state == "failed") | .mac'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "rollout-status"
			id, err := rolloutIDArg(args[0])
			if err != nil {
				return e.fail(name, err, nil)
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, nil)
			}
			r, err := c.Rollout(cmd.Context(), id)
			if err != nil {
				return e.fail(name, e.apiErr(fmt.Sprintf("rollout %d", id), c, err), map[string]any{"server": c.Server()})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "rollout": r})
			}
			fmt.Fprintf(e.stdout, "rollout %d: %s\n", r.ID, r.State)
			if r.Reason != "" {
				fmt.Fprintf(e.stdout, "reason:        %s\n", r.Reason)
			}
			fmt.Fprintf(e.stdout, "image:         %s\nselector:      %s\ncanary:        %d\nmax parallel:  %d\nmax failures:  %d\n",
				r.Image, r.Selector, r.Canary, r.MaxParallel, r.MaxFailures)
			fmt.Fprintf(e.stdout, "created:       %s\nstarted:       %s\nended:         %s\n", localTime(&r.CreatedAt), localTime(r.StartedAt), localTime(r.EndedAt))
			tw := newTable(e.stdout)
			fmt.Fprintln(tw, "#\tMAC\tSTATE\tFLASH\tRUN\tPREVIOUS IMAGE\tDETAIL")
			for _, m := range r.Machines {
				order := strconv.Itoa(m.Order)
				if m.Canary {
					order += " (canary)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", order, m.MAC, m.State, idText(m.FlashID), idText(m.RunID), dash(m.PreviousImage), dash(m.Detail))
			}
			return tw.Flush()
		},
	}
}

func idText(id int64) string {
	if id == 0 {
		return "-"
	}
	return strconv.FormatInt(id, 10)
}

func newRolloutListCmd(e *env) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "list [--limit N]",
		Short: "List the rollouts, newest first",
		Long:  `Lists the rollouts (GET /rollouts), newest first: id, state, image, selector, how many machines succeeded and failed, when created and ended.`,
		Example: `  bty-ctl rollout list
  bty-ctl rollout list --limit 5 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "rollout-list"
			if limit < 1 || limit > 1000 {
				return e.fail(name, usageErr("--limit %d: want 1 to 1000", limit), nil)
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, nil)
			}
			rs, err := c.Rollouts(cmd.Context(), limit)
			if err != nil {
				return e.fail(name, e.apiErr("listing rollouts", c, err), map[string]any{"server": c.Server()})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "rollouts": rs})
			}
			if len(rs) == 0 {
				fmt.Fprintf(e.stderr, "no rollouts on %s yet: start one with bty-ctl rollout start --selector SEL --image NAME\n", c.Server())
				return nil
			}
			tw := newTable(e.stdout)
			fmt.Fprintln(tw, "ID\tSTATE\tIMAGE\tSELECTOR\tMACHINES\tCREATED\tENDED")
			for _, r := range rs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d/%d ok, %d failed\t%s\t%s\n", r.ID, r.State, r.Image, r.Selector,
					r.Count(fleet.RMSucceeded), len(r.Machines), r.Count(fleet.RMFailed), localTime(&r.CreatedAt), localTime(r.EndedAt))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "how many rollouts to list (1-1000)")
	return cmd
}

// newRolloutActionCmd is rollout pause, resume or abort.
func newRolloutActionCmd(e *env, action, short string) *cobra.Command {
	long := map[string]string{
		"pause":  "Pauses a running rollout (POST /rollouts/{id}/pause): no new reflash starts; those running finish and are recorded. A rollout that is not running is refused (exit 1).",
		"resume": "Resumes a paused rollout (POST /rollouts/{id}/resume): the next machines start at once. A rollout that is not paused is refused (exit 1).",
		"abort":  "Aborts a running or paused rollout (POST /rollouts/{id}/abort): the machines whose reflash has not started are skipped and keep their image; those running finish and are recorded. An ended rollout is refused (exit 1).",
	}[action]
	return &cobra.Command{
		Use:     action + " ID",
		Short:   short,
		Long:    long,
		Example: "  bty-ctl rollout " + action + " 3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := "rollout-" + action
			id, err := rolloutIDArg(args[0])
			if err != nil {
				return e.fail(name, err, nil)
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, nil)
			}
			r, err := c.RolloutAction(cmd.Context(), id, action)
			if err != nil {
				return e.fail(name, e.apiErr(fmt.Sprintf("%s of rollout %d", action, id), c, err), map[string]any{"server": c.Server()})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "rollout": r})
			}
			fmt.Fprintf(e.stdout, "rollout %d is %s\n", r.ID, r.State)
			return nil
		},
	}
}
