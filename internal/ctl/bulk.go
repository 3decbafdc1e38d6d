package ctl

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/cmdrun"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/labels"
)

// Bulk actions: machines set, reflash, power and clear with --selector
// instead of a MAC act on every machine the selector picks
// (docs/reference.md, "Labels and selectors").

// macOrSelector is the Args check of a command that takes a MAC, or
// --selector instead of it; extra is how many more arguments it takes.
func macOrSelector(selector *string, extra int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case *selector != "" && len(args) != extra:
			return usageErr("--selector picks the machines: give no MAC with it")
		case *selector == "" && len(args) != extra+1:
			return usageErr("give one MAC, or --selector SEL for every machine it picks")
		}
		return nil
	}
}

// addSelectorFlag registers --selector on a command that may act in bulk.
func addSelectorFlag(cmd *cobra.Command, selector *string) {
	cmd.Flags().StringVar(selector, "selector", "", "act on every machine this label selector picks (role=ci,rack!=r3) instead of one MAC; at most 1000")
}

// runBulk sends a bulk action and prints each machine's outcome; any
// machine that refused it makes the exit 1.
func (e *env) runBulk(cmd *cobra.Command, name string, req api.BulkRequest) error {
	extra := map[string]any{"selector": req.Selector, "action": req.Action}
	if _, err := labels.Parse(req.Selector); err != nil {
		return e.fail(name, exitcode.Wrap(exitcode.Usage, fmt.Errorf("--selector: %w", err)), extra)
	}
	c, err := e.authClient()
	if err != nil {
		return e.fail(name, err, extra)
	}
	extra["server"] = c.Server()
	res, err := c.Bulk(cmd.Context(), req)
	if err != nil {
		return e.fail(name, e.apiErr(req.Action+" on the machines "+req.Selector+" picks", c, err), extra)
	}
	if e.asJSON {
		if err := writeJSON(e, name, map[string]any{"ok": res.Failed == 0, "server": c.Server(), "result": res}); err != nil {
			return err
		}
	} else {
		if res.Matched == 0 {
			fmt.Fprintf(e.stdout, "the selector %s picks no machine: nothing done\n", req.Selector)
			return nil
		}
		tw := newTable(e.stdout)
		fmt.Fprintln(tw, "MAC\tRESULT\tDETAIL")
		for _, it := range res.Results {
			result, detail := "ok", it.Note
			switch {
			case it.Error != "":
				result, detail = "FAILED", it.Error
			case it.FlashID != 0:
				detail = fmt.Sprintf("flash %d %s", it.FlashID, it.Note)
			case it.State != "":
				detail = "power " + it.State
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", it.MAC, result, dash(detail))
		}
		tw.Flush()
		fmt.Fprintf(e.stdout, "%s on %d machines: %d done, %d refused\n", req.Action, res.Matched, res.OK, res.Failed)
	}
	if res.Failed > 0 {
		err := fmt.Errorf("%d of %d machines refused %s (see each one's error above)", res.Failed, res.Matched, req.Action)
		if e.asJSON {
			return cmdrun.Reported(err) // the document above says so
		}
		return err
	}
	return nil
}
