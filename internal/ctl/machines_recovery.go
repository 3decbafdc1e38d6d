package ctl

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/fleet"
)

// Failure recovery's commands (docs/reference.md, "Failure recovery").

func newMachinesReportFailureCmd(e *env) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "report-failure MAC --reason TEXT",
		Short: "Report a machine bad: bty-web recovers it (power cycle, reflash, quarantine)",
		Long: `Tells bty-web the machine is bad, as a CI system does after a job that
broke it. bty-web then recovers it with no one at a console: a power
cycle through its BMC; if it does not pass its health check after that,
a reflash to its known-good baseline (else its image), retried with a
backoff; if those fail too, quarantine until an operator runs bty-ctl
machines clear. bty-ctl machines actions MAC shows each step.

A machine already recovering, in quarantine or flashing is exit 1 with
what it is doing.`,
		Example: `  bty-ctl machines report-failure 52:54:00:12:34:56 --reason "job 4711: kernel oops in nvme"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-report-failure"
			if strings.TrimSpace(reason) == "" {
				return e.fail(name, usageErr("--reason: say what failed (it is kept in the machine's history)"), map[string]any{"mac": args[0]})
			}
			if len(reason) > fleet.MaxFailureLen {
				return e.fail(name, usageErr("--reason: at most %d bytes", fleet.MaxFailureLen), map[string]any{"mac": args[0]})
			}
			mac, c, err := e.macClient(name, args[0])
			if err != nil {
				return err
			}
			m, err := c.ReportFailure(cmd.Context(), mac, reason)
			if err != nil {
				return e.fail(name, e.apiErr("reporting "+mac.String()+" bad", c, err), map[string]any{"server": c.Server(), "mac": mac})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"ok": true, "server": c.Server(), "machine": m})
			}
			if m.Quarantine != nil {
				fmt.Fprintf(e.stdout, "%s is quarantined: %s\n", mac, m.Quarantine.Reason)
				return nil
			}
			fmt.Fprintf(e.stdout, "%s: recovery %s (bty-ctl machines actions %s follows it)\n", mac, recoveryText(m.Recovery), mac)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "what failed (one line, kept in the history)")
	return cmd
}

func newMachinesClearCmd(e *env) *cobra.Command {
	var selector string
	cmd := &cobra.Command{
		Use:   "clear MAC|--selector SEL",
		Short: "Take a machine out of quarantine (and stop its recovery)",
		Long: `Takes the machine out of quarantine, so health checks, recovery,
schedules and rollouts act on it again, and stops a recovery in
progress. A machine in neither is exit 1. With --selector, every
machine the selector picks (those in neither are listed as such).`,
		Example: `  bty-ctl machines clear 52:54:00:12:34:56
  bty-ctl machines clear --selector rack=r3`,
		Args: macOrSelector(&selector, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-clear"
			if selector != "" {
				return e.runBulk(cmd, name, api.BulkRequest{Selector: selector, Action: "clear"})
			}
			mac, c, err := e.macClient(name, args[0])
			if err != nil {
				return err
			}
			m, err := c.Clear(cmd.Context(), mac)
			if err != nil {
				return e.fail(name, e.apiErr("clearing "+mac.String(), c, err), map[string]any{"server": c.Server(), "mac": mac})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"ok": true, "server": c.Server(), "machine": m})
			}
			fmt.Fprintf(e.stdout, "%s cleared: %s\n", mac, m.State())
			return nil
		},
	}
	addSelectorFlag(cmd, &selector)
	return cmd
}

func newMachinesActionsCmd(e *env) *cobra.Command {
	var limit, offset int
	cmd := &cobra.Command{
		Use:   "actions MAC [--limit N] [--offset N]",
		Short: "List what failure recovery did to a machine, newest first",
		Long: `Lists the machine's automation history, newest first: when, the step
(failure, power-cycle, reflash, backoff, recovered, quarantine,
cancelled, cleared), the flash it started, the failure it was for and
what it did. --json gives every field.`,
		Example: `  bty-ctl machines actions 52:54:00:12:34:56`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-actions"
			if limit < 1 || limit > 1000 || offset < 0 {
				return e.fail(name, exitcode.Wrap(exitcode.Usage, errors.New("--limit: 1 to 1000; --offset: 0 or more")), map[string]any{"mac": args[0]})
			}
			mac, c, err := e.macClient(name, args[0])
			if err != nil {
				return err
			}
			page, err := c.Actions(cmd.Context(), mac, limit, offset)
			if err != nil {
				return e.fail(name, e.apiErr("actions of "+mac.String(), c, err), map[string]any{"server": c.Server(), "mac": mac})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "mac": mac, "total": page.Total, "actions": page.Actions})
			}
			if len(page.Actions) == 0 {
				fmt.Fprintf(e.stdout, "%s has no recovery actions\n", mac)
				return nil
			}
			tw := newTable(e.stdout)
			fmt.Fprintln(tw, "AT\tSTEP\tFLASH\tREASON\tDETAIL")
			for _, a := range page.Actions {
				flash := "-"
				if a.FlashID != 0 {
					flash = fmt.Sprint(a.FlashID)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", localTime(&a.At), a.Action, flash, dash(a.Reason), dash(a.Detail))
			}
			tw.Flush()
			if shown := offset + len(page.Actions); shown < page.Total {
				fmt.Fprintf(e.stderr, "%d of %d actions shown; more with --offset %d\n", len(page.Actions), page.Total, shown)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "how many actions to list (1-1000)")
	cmd.Flags().IntVar(&offset, "offset", 0, "skip this many of the newest first")
	return cmd
}

func healthWatchText(m fleet.Machine) string {
	if m.HealthEvery == "" {
		return "-"
	}
	return fmt.Sprintf("every %s, recovery after %s failing (tcp:%d)", m.HealthEvery, m.FailAfter(), m.HealthPort())
}

func healthText(h *fleet.Health) string {
	if h == nil {
		return "-"
	}
	if h.OK {
		return "ok since " + localTime(&h.Since)
	}
	return "FAILING since " + localTime(&h.Since) + ": " + h.Detail
}

func recoveryText(r *fleet.Recovery) string {
	if r == nil {
		return "-"
	}
	s := fmt.Sprintf("%s since %s (%d reflashes) for: %s", r.Step, localTime(&r.StepAt), r.Reflashes, r.Reason)
	if r.NextAt != nil && r.NextAt.After(time.Now()) {
		s += "; next step by " + localTime(r.NextAt)
	}
	return s
}

func quarantineText(q *fleet.Quarantine) string {
	if q == nil {
		return "-"
	}
	return "QUARANTINED at " + localTime(&q.At) + ": " + q.Reason + " (bty-ctl machines clear)"
}
