package ctl

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/labels"
)

// Schedules (docs/reference.md, "Schedules").

func newSchedulesCmd(e *env) *cobra.Command {
	return groupCmd(e, "schedules", "Add, list, pause and delete the schedules that reflash machines on their own",
		`A schedule reflashes the machines a label selector picks at the times of
a cron expression in a time zone: to the record's image (action reflash)
or to the machine's known-good baseline (action known-good). At most
--max-parallel of its reflashes run at once; machines not started within
--window after the scheduled time are skipped and reported, as are
quarantined machines. If bty-web was down at a scheduled time, it fires
that occurrence once when it is back, provided the window has not
closed; older missed occurrences are skipped. Each reflash is a history
row with trigger "schedule" and the schedule's id (bty-ctl machines
history MAC).`,
		newSchedulesAddCmd(e), newSchedulesListCmd(e), newSchedulesGetCmd(e), newSchedulesPauseCmd(e, true),
		newSchedulesPauseCmd(e, false), newSchedulesDeleteCmd(e))
}

// parseScheduleID checks a schedule id argument locally (misuse, exit 2).
func parseScheduleID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		return 0, usageErr("schedule id %q: give the positive number bty-ctl schedules list shows", s)
	}
	return id, nil
}

// scheduleClient checks a schedule id argument and opens a logged-in
// client; errors come back already reported as command name's failure.
// extra is the --json document's context (the id, the server).
func (e *env) scheduleClient(name, arg string) (int64, *client.Client, map[string]any, error) {
	extra := map[string]any{"id": arg}
	id, err := parseScheduleID(arg)
	if err != nil {
		return 0, nil, extra, e.fail(name, err, extra)
	}
	c, err := e.authClient()
	if err != nil {
		return 0, nil, extra, e.fail(name, err, extra)
	}
	extra["server"] = c.Server()
	return id, c, extra, nil
}

// zoned is t in the schedule's zone ("-" for none).
func zoned(t *time.Time, tz string) string {
	if t == nil || t.IsZero() {
		return "-"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		loc = time.UTC
	}
	return t.In(loc).Format("2006-01-02 15:04 MST")
}

// occurrenceSummary is the latest occurrence in a few words.
func occurrenceSummary(s api.Schedule) string {
	o := s.Occurrence
	if o == nil {
		return "not fired yet"
	}
	c := o.Counts()
	out := fmt.Sprintf("%s: %d done, %d failed, %d skipped", zoned(&o.At, s.TZ), c[fleet.SchedDone], c[fleet.SchedFailed], c[fleet.SchedSkipped])
	if n := c[fleet.SchedStarted]; n > 0 {
		out += fmt.Sprintf(", %d running", n)
	}
	if n := c[fleet.SchedQueued]; n > 0 {
		out += fmt.Sprintf(", %d queued", n)
	}
	return out
}

func newSchedulesAddCmd(e *env) *cobra.Command {
	var (
		name, selector, cronExpr, tz, action, window string
		maxParallel                                  int
	)
	cmd := &cobra.Command{
		Use:   "add --name NAME --selector SEL --cron EXPR [--tz ZONE] [--action reflash|known-good] [--max-parallel N] [--window DURATION]",
		Short: "Add a schedule",
		Long: `Add a schedule (POST /schedules). --cron takes the standard 5 fields,
minute hour day-of-month month day-of-week ('0 3 * * *' is 03:00 every
day, '30 2 * * 1-5' 02:30 on weekdays), or @hourly, @daily, @weekly,
@monthly, @yearly; the times are read in --tz, an IANA zone name
(Europe/Berlin; default UTC), daylight saving time included. The
selector is required and is matched when the schedule fires.

--action reflash reflashes each machine to its record's image (one
without an image is skipped); known-good to its known-good baseline (one
without a baseline is skipped). --max-parallel (1-64) bounds the
schedule's reflashes running at once; --window (1m-24h) is how long
after the scheduled time machines may still start (a busy machine is
waited for until then).

A bad field is exit 2 before anything is sent. The answer shows the
schedule's id and its next time.`,
		Example: `  bty-ctl schedules add --name nightly-ci --selector role=ci --cron '0 3 * * *' --tz Europe/Berlin
  bty-ctl schedules add --name weekly-gpu --selector gpu=a100 --cron '0 22 * * 6' --action known-good --max-parallel 2 --window 4h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			const cname = "schedules-add"
			act := fleet.ScheduleAction(action)
			u := api.ScheduleUpdate{Name: &name, Selector: &selector, Cron: &cronExpr, TZ: &tz, Action: &act, MaxParallel: &maxParallel, Window: &window}
			extra := map[string]any{"name": name}
			if _, errs := (fleet.Schedule{}).Apply(u, time.Now()); len(errs) > 0 {
				return e.fail(cname, usageErr("%s", flagNames(errs)), extra)
			}
			if _, err := labels.Parse(selector); err != nil {
				return e.fail(cname, usageErr("--selector: %v", err), extra)
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(cname, err, extra)
			}
			extra["server"] = c.Server()
			s, err := c.CreateSchedule(cmd.Context(), u)
			if err != nil {
				return e.fail(cname, e.apiErr("adding schedule "+name, c, err), extra)
			}
			if e.asJSON {
				return writeJSON(e, cname, map[string]any{"ok": true, "server": c.Server(), "schedule": s})
			}
			fmt.Fprintf(e.stdout, "added schedule %d (%s): %s %s of %s, next %s\n", s.ID, s.Name, s.Action, s.Cron+" "+s.TZ, s.Selector, zoned(s.NextFireAt, s.TZ))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "the schedule's name (required)")
	f.StringVar(&selector, "selector", "", "label selector of the machines, like role=ci,rack!=r3 (required)")
	f.StringVar(&cronExpr, "cron", "", "cron expression: 5 fields like '0 3 * * *', or @daily (required)")
	f.StringVar(&tz, "tz", "UTC", "IANA time zone the cron times are read in, like Europe/Berlin")
	f.StringVar(&action, "action", string(fleet.ActionReflash), "reflash (the record's image) or known-good (the machine's baseline)")
	f.IntVar(&maxParallel, "max-parallel", fleet.DefaultScheduleParallel, "how many of its reflashes run at once (1-64)")
	f.StringVar(&window, "window", "2h", "how long after its time machines may still start (1m-24h)")
	return cmd
}

// flagNames is the errors' messages with each wire field named as its
// flag ("max_parallel: ..." becomes "--max-parallel: ...").
func flagNames(errs []error) string {
	msgs := make([]string, 0, len(errs))
	for _, err := range errs {
		var ve *fleet.ValidationError
		if errors.As(err, &ve) {
			msgs = append(msgs, "--"+strings.ReplaceAll(ve.Field, "_", "-")+": "+ve.Msg)
			continue
		}
		msgs = append(msgs, err.Error())
	}
	return strings.Join(msgs, "; ")
}

func newSchedulesListCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the schedules",
		Long: `List every schedule (GET /schedules), by id: its selector, cron
expression and zone, action, max parallel and window, the next time (in
its zone; "paused" when paused) and how its latest occurrence went.`,
		Example: `  bty-ctl schedules list
  bty-ctl schedules list --json | jq '.schedules[] | {name, next_fire_at}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			const cname = "schedules-list"
			c, err := e.authClient()
			if err != nil {
				return e.fail(cname, err, nil)
			}
			list, err := c.Schedules(cmd.Context())
			if err != nil {
				return e.fail(cname, e.apiErr("listing schedules", c, err), map[string]any{"server": c.Server()})
			}
			if e.asJSON {
				return writeJSON(e, cname, map[string]any{"server": c.Server(), "schedules": list})
			}
			if len(list) == 0 {
				fmt.Fprintf(e.stderr, "no schedules on %s yet: add one with bty-ctl schedules add\n", c.Server())
				return nil
			}
			tw := newTable(e.stdout)
			fmt.Fprintln(tw, "ID\tNAME\tSELECTOR\tCRON\tTZ\tACTION\tPARALLEL\tWINDOW\tNEXT\tLAST")
			for _, s := range list {
				next := zoned(s.NextFireAt, s.TZ)
				if s.Paused {
					next = "paused"
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.ID, s.Name, s.Selector, s.Cron, s.TZ, s.Action, s.MaxParallel, s.Window, next, occurrenceSummary(s))
			}
			return tw.Flush()
		},
	}
}

func newSchedulesGetCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a schedule and its latest occurrence, machine by machine",
		Long: `Show schedule ID (GET /schedules/{id}): its settings, next time, the
occurrences it skipped, and its latest occurrence with each machine's
state (queued, started, done, failed, skipped), its flash and why it
waits, failed or was skipped. An unknown ID is exit 1.`,
		Example: `  bty-ctl schedules get 3`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const cname = "schedules-get"
			id, c, extra, err := e.scheduleClient(cname, args[0])
			if err != nil {
				return err
			}
			s, err := c.Schedule(cmd.Context(), id)
			if err != nil {
				return e.fail(cname, e.apiErr(fmt.Sprintf("getting schedule %d", id), c, err), extra)
			}
			if e.asJSON {
				return writeJSON(e, cname, map[string]any{"server": c.Server(), "schedule": s})
			}
			next := zoned(s.NextFireAt, s.TZ)
			if s.Paused {
				next = "paused"
			}
			tw := newTable(e.stdout)
			fmt.Fprintf(tw, "schedule:\t%d (%s)\n", s.ID, s.Name)
			fmt.Fprintf(tw, "selector:\t%s\n", s.Selector)
			fmt.Fprintf(tw, "cron:\t%s (%s)\n", s.Cron, s.TZ)
			fmt.Fprintf(tw, "action:\t%s, %d at a time, window %s\n", s.Action, s.MaxParallel, s.Window)
			fmt.Fprintf(tw, "next:\t%s\n", next)
			fmt.Fprintf(tw, "last fired:\t%s\n", zoned(s.LastFireAt, s.TZ))
			fmt.Fprintf(tw, "skipped:\t%d (the last %s)\n", s.Skipped, zoned(s.LastSkipAt, s.TZ))
			fmt.Fprintf(tw, "latest:\t%s\n", occurrenceSummary(s))
			if err := tw.Flush(); err != nil {
				return err
			}
			if s.Occurrence != nil && len(s.Occurrence.Machines) > 0 {
				tw = newTable(e.stdout)
				fmt.Fprintln(tw, "\nMAC\tSTATE\tFLASH\tREASON")
				for _, om := range s.Occurrence.Machines {
					flash := "-"
					if om.FlashID != 0 {
						flash = strconv.FormatInt(om.FlashID, 10)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", om.MAC, om.State, flash, dash(om.Reason))
				}
				return tw.Flush()
			}
			return nil
		},
	}
}

func newSchedulesPauseCmd(e *env, pause bool) *cobra.Command {
	use, short, long := "pause", "Pause a schedule", `Pause schedule ID (PUT /schedules/{id} with paused true): it fires
nothing, and starts no more machines of an occurrence in progress, until
resumed; its occurrences meanwhile are skipped. An unknown ID is exit 1.`
	if !pause {
		use, short, long = "resume", "Resume a paused schedule", `Resume schedule ID (PUT /schedules/{id} with paused false): it fires
again from its next time on (occurrences while it was paused stay
skipped). An unknown ID is exit 1.`
	}
	return &cobra.Command{
		Use:     use + " ID",
		Short:   short,
		Long:    long,
		Example: "  bty-ctl schedules " + use + " 3",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cname := "schedules-" + use
			id, c, extra, err := e.scheduleClient(cname, args[0])
			if err != nil {
				return err
			}
			s, err := c.UpdateSchedule(cmd.Context(), id, api.ScheduleUpdate{Paused: &pause})
			if err != nil {
				return e.fail(cname, e.apiErr(fmt.Sprintf("%s schedule %d", map[bool]string{true: "pausing", false: "resuming"}[pause], id), c, err), extra)
			}
			if e.asJSON {
				return writeJSON(e, cname, map[string]any{"ok": true, "server": c.Server(), "schedule": s})
			}
			if pause {
				fmt.Fprintf(e.stdout, "paused schedule %d (%s)\n", s.ID, s.Name)
			} else {
				fmt.Fprintf(e.stdout, "resumed schedule %d (%s): next %s\n", s.ID, s.Name, zoned(s.NextFireAt, s.TZ))
			}
			return nil
		},
	}
}

func newSchedulesDeleteCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete a schedule",
		Long: `Delete schedule ID (DELETE /schedules/{id}). Reflashes it already
started go on; no more start. An unknown ID is exit 1.`,
		Example: `  bty-ctl schedules delete 3`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const cname = "schedules-delete"
			id, c, extra, err := e.scheduleClient(cname, args[0])
			if err != nil {
				return err
			}
			if err := c.DeleteSchedule(cmd.Context(), id); err != nil {
				return e.fail(cname, e.apiErr(fmt.Sprintf("deleting schedule %d", id), c, err), extra)
			}
			if e.asJSON {
				return writeJSON(e, cname, map[string]any{"ok": true, "server": c.Server(), "id": id})
			}
			fmt.Fprintf(e.stdout, "deleted schedule %d\n", id)
			return nil
		},
	}
}
