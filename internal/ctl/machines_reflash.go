package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/btyproject/bty/internal/api"
	"github.com/btyproject/bty/internal/client"
	"github.com/btyproject/bty/internal/exitcode"
	"github.com/btyproject/bty/internal/fleet"
	"github.com/btyproject/bty/internal/human"
)

func newMachinesReflashCmd(e *env) *cobra.Command {
	var image, provisioning, hostname, selector string
	var wait, cancelOnInterrupt, cancel, knownGood bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "reflash MAC|--selector SEL [--image NAME] [--provisioning MODE] [--hostname H] | --known-good [--wait [--timeout D] [--cancel-on-interrupt]] | --cancel",
		Short: "Reflash a machine now: power-cycle it into the live env, flash, boot its disk, wait for ready",
		Long: `Asks bty-web for a one-shot reflash: the machine's next PXE boot gets
the live env flashing --image (else the record's image), with this
flash's --provisioning and --hostname if given, whatever its boot
policy; after the flash it boots its disk as its policy says. The
record (policy, image) is not changed.

With a power driver (bty-ctl machines set --power-*) bty-web asks the
BMC for a one-time PXE boot and power-cycles the machine (powers it on
when off); without one, reboot the machine by other means.

--wait follows the flash (from the server's event stream) and prints
each phase as it happens:

  requested  bty-web took the request
  power      the BMC powered or cycled the machine (how: pxe-once+cycle,
             pxe-once+on, cycle, on)
  pxe        the machine PXE-booted and was served the live env
  fetch      the live env started fetching the image
  done       the live env wrote and verified the image
  disk       the machine PXE-booted again and was sent to its disk
             (not seen when proxy-DHCP sends it there without a contact
             over HTTP)
  ready      the flashed OS passed its ready check (phone-home from
             cloud-init, a TCP port, or none: ready at done)

It exits 0 when the machine is ready, 1 when the flash failed, timed out
on the server (the machine's flash deadline) or --timeout passed first,
with the reason. Ctrl-C or --timeout leaves the flash running on the
server unless --cancel-on-interrupt is given (a CI job must not leave a
machine half flashed by accident). --json prints the final flash record.

--known-good reflashes the machine's known-good baseline (the image,
host name and seed its last successful cijoe-online run was made with,
bty-ctl machines get MAC shows it) and then runs its workflow again; it
takes none of --image, --provisioning and --hostname (exit 2), and a
machine without a baseline is refused (exit 1).

A flash already in progress for the machine is refused (exit 1), naming
it; --cancel cancels it.

--selector SEL instead of a MAC reflashes every machine the label
selector picks (with --image or --known-good only; no --wait: follow
them with bty-ctl machines history, or the dashboard); each one's
outcome is listed, and any that refused (a flash in progress, no image)
makes the exit 1.`,
		Example: `  bty-ctl machines reflash 52:54:00:12:34:56 --image debian.img.zst --wait --timeout 30m
  bty-ctl machines reflash 52:54:00:12:34:56 --hostname ci-job-7 --wait --json
  bty-ctl machines reflash 52:54:00:12:34:56 --known-good --wait
  bty-ctl machines reflash 52:54:00:12:34:56 --cancel
  bty-ctl machines reflash --selector role=ci --image debian-13.img.zst`,
		Args: macOrSelector(&selector, 0),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-reflash"
			f := cmd.Flags()
			if selector != "" {
				for _, fl := range []string{"hostname", "provisioning", "wait", "timeout", "cancel-on-interrupt", "cancel"} {
					if f.Changed(fl) {
						return e.fail(name, usageErr("--%s does not go with --selector: a bulk reflash takes --image or --known-good", fl), map[string]any{"selector": selector})
					}
				}
				req := api.BulkRequest{Selector: selector, Action: "reflash"}
				switch {
				case knownGood && f.Changed("image"):
					return e.fail(name, usageErr("--known-good restores each baseline's image: give no --image with it"), map[string]any{"selector": selector})
				case knownGood:
					req.Action = "known-good"
				case f.Changed("image"):
					v := strings.TrimSpace(image)
					req.Image = &v
				}
				return e.runBulk(cmd, name, req)
			}
			mac, err := parseMAC(args[0])
			if err != nil {
				return e.fail(name, err, map[string]any{"mac": args[0]})
			}
			var req fleet.ReflashRequest
			if f.Changed("image") {
				v := strings.TrimSpace(image)
				req.Image = &v
			}
			if f.Changed("hostname") {
				v := strings.TrimSpace(hostname)
				req.Hostname = &v
			}
			if f.Changed("provisioning") {
				m := fleet.Mode(strings.TrimSpace(provisioning))
				if !m.Valid() {
					return e.fail(name, usageErr("--provisioning %q: want one of %s", m, joinValues(fleet.Modes)), map[string]any{"mac": mac})
				}
				req.Provisioning = &m
			}
			if knownGood {
				if req != (fleet.ReflashRequest{}) {
					return e.fail(name, usageErr("--known-good restores the baseline's image, host name and seed: give no --image, --provisioning or --hostname with it"), map[string]any{"mac": mac})
				}
				req.KnownGood = true
			}
			switch {
			case timeout < 0:
				return e.fail(name, usageErr("--timeout must not be negative"), map[string]any{"mac": mac})
			case cancel && (wait || req != fleet.ReflashRequest{}):
				return e.fail(name, usageErr("--cancel takes no other flag: it cancels the flash in progress"), map[string]any{"mac": mac})
			case !wait && (timeout != 0 || cancelOnInterrupt):
				return e.fail(name, usageErr("--timeout and --cancel-on-interrupt go with --wait"), map[string]any{"mac": mac})
			}
			c, err := e.authClient()
			if err != nil {
				return e.fail(name, err, map[string]any{"mac": mac})
			}
			if cancel {
				return e.cancelFlash(cmd.Context(), name, c, mac)
			}
			res, err := c.Reflash(cmd.Context(), mac, req)
			if err != nil {
				return e.fail(name, e.apiErr("reflash of "+mac.String(), c, err), map[string]any{"server": c.Server(), "mac": mac})
			}
			if !e.asJSON {
				kg := ""
				if res.Flash.KnownGoodRun != 0 {
					kg = fmt.Sprintf(", the known-good baseline of run %d", res.Flash.KnownGoodRun)
				}
				fmt.Fprintf(e.stdout, "flash %d of %s: %s%s (%s)\n", res.Flash.ID, mac, res.Flash.Image, kg, powerNote(res))
			}
			if !wait {
				if e.asJSON {
					return writeJSON(e, name, map[string]any{"server": c.Server(), "mac": mac, "flash": res.Flash, "power": res.Power, "note": res.Note})
				}
				fmt.Fprintf(e.stdout, "follow it with: bty-ctl machines history %s, or the machine's page\n", mac)
				return nil
			}
			return e.waitFlash(cmd.Context(), name, c, mac, res.Flash, timeout, cancelOnInterrupt)
		},
	}
	f := cmd.Flags()
	f.StringVar(&image, "image", "", "image to flash this time (default: the record's)")
	f.StringVar(&provisioning, "provisioning", "", "provisioning mode this time: none, cloud-init, cijoe or cijoe-online")
	f.StringVar(&hostname, "hostname", "", "host name this time")
	f.BoolVar(&wait, "wait", false, "wait until the machine is ready, printing each phase; exit 1 if it fails")
	f.DurationVar(&timeout, "timeout", 0, "with --wait: give up waiting after this long, like 30m (0: until the flash ends on the server)")
	f.BoolVar(&cancelOnInterrupt, "cancel-on-interrupt", false, "with --wait: cancel the flash on the server on Ctrl-C or --timeout")
	f.BoolVar(&cancel, "cancel", false, "cancel the machine's flash in progress")
	f.BoolVar(&knownGood, "known-good", false, "reflash the machine's known-good baseline (image, host name, seed) and rerun its workflow")
	addSelectorFlag(cmd, &selector)
	return cmd
}

// powerNote says how the machine will be booted into its flash.
func powerNote(res api.ReflashResult) string {
	if res.Power == "none" {
		return "no power driver: reboot the machine by other means"
	}
	return "power-cycling it through its BMC"
}

// cancelFlash cancels the machine's flash in progress.
func (e *env) cancelFlash(ctx context.Context, name string, c *client.Client, mac fleet.MAC) error {
	m, err := c.Machine(ctx, mac)
	if err != nil {
		return e.fail(name, e.apiErr("getting machine "+mac.String(), c, err), map[string]any{"server": c.Server(), "mac": mac})
	}
	if !m.Flash.Running() {
		return e.fail(name, fmt.Errorf("machine %s has no flash in progress", mac), map[string]any{"server": c.Server(), "mac": mac})
	}
	f, err := c.CancelFlash(ctx, mac, m.Flash.ID)
	if err != nil {
		return e.fail(name, e.apiErr(fmt.Sprintf("cancelling flash %d of %s", m.Flash.ID, mac), c, err), map[string]any{"server": c.Server(), "mac": mac})
	}
	if e.asJSON {
		return writeJSON(e, name, map[string]any{"server": c.Server(), "mac": mac, "flash": f})
	}
	fmt.Fprintf(e.stdout, "flash %d of %s cancelled (%s)\n", f.ID, mac, f.Reason)
	return nil
}

// waitFlash follows flash f of mac until it ends, printing each phase
// reached, and returns nil when it is ready.
func (e *env) waitFlash(ctx context.Context, name string, c *client.Client, mac fleet.MAC, f fleet.Flash, timeout time.Duration, cancelOnInterrupt bool) error {
	wctx := ctx
	if timeout > 0 {
		var stop context.CancelFunc
		wctx, stop = context.WithTimeout(ctx, timeout)
		defer stop()
	}
	out := io.Discard
	if !e.asJSON {
		out = e.stdout
	}
	p := newPhasePrinter(out, f)
	last := f
	err := c.WatchMachine(wctx, mac, func(m api.Machine) error {
		if m.Flash == nil || m.Flash.ID != f.ID {
			// A newer flash replaced it on the record: read it.
			g, err := c.Flash(wctx, mac, f.ID)
			if err != nil {
				return err
			}
			m.Flash = &g
		}
		last = *m.Flash
		p.update(last)
		if !last.Running() {
			return client.ErrStopWatching
		}
		return nil
	})
	extra := map[string]any{"server": c.Server(), "mac": mac, "flash": last}
	if err != nil && wctx.Err() == nil {
		return e.fail(name, e.apiErr(fmt.Sprintf("following flash %d of %s", f.ID, mac), c, err), extra)
	}
	if last.Running() {
		// Interrupted or --timeout: the flash goes on unless asked.
		why := "interrupted"
		if ctx.Err() == nil {
			why = "--timeout " + timeout.String() + " passed"
		}
		what := "the flash continues on the server (bty-ctl machines reflash " + mac.String() + " --cancel stops it)"
		if cancelOnInterrupt {
			cctx, stop := context.WithTimeout(context.Background(), 15*time.Second)
			defer stop()
			if cf, err := c.CancelFlash(cctx, mac, f.ID); err != nil {
				what = "cancelling it failed: " + err.Error()
			} else {
				last, what = cf, "the flash was cancelled on the server"
				extra["flash"] = last
			}
		}
		return e.fail(name, fmt.Errorf("flash %d of %s: %s in phase %s after %s; %s", f.ID, mac, why, last.Phase,
			time.Since(last.RequestedAt).Round(time.Second), what), extra)
	}
	if last.Result != fleet.FlashReady {
		return e.fail(name, fmt.Errorf("flash %d of %s %s in phase %s after %s: %s", f.ID, mac, last.Result, last.Phase,
			last.Duration(time.Now()).Round(time.Second), last.Reason), extra)
	}
	if e.asJSON {
		return writeJSON(e, name, extra)
	}
	fmt.Fprintf(e.stdout, "ready in %s: %s\n", last.Duration(time.Now()).Round(100*time.Millisecond), phaseTimes(last))
	return nil
}

// phasePrinter prints each phase of a flash once, as it is reached,
// with its offset from the request, and the live env's progress at
// most every progressEvery.
type phasePrinter struct {
	w        io.Writer
	seen     map[fleet.Phase]bool
	lastProg time.Time
}

const progressEvery = 15 * time.Second

func newPhasePrinter(w io.Writer, f fleet.Flash) *phasePrinter {
	p := &phasePrinter{w: w, seen: map[fleet.Phase]bool{}}
	p.update(f)
	return p
}

func (p *phasePrinter) update(f fleet.Flash) {
	for _, ph := range fleet.Phases {
		at := f.PhaseAt(ph)
		if at == nil || p.seen[ph] {
			continue
		}
		p.seen[ph] = true
		fmt.Fprintf(p.w, "  %-9s %-10s %s\n", "+"+offset(f, *at), ph, phaseDetail(f, ph))
	}
	if f.Phase == fleet.PhaseFetch && f.BytesWritten > 0 && time.Since(p.lastProg) >= progressEvery {
		p.lastProg = time.Now()
		fmt.Fprintf(p.w, "  %-9s %-10s %s\n", "", "", progressText(f))
	}
	if !f.Running() && !p.seen["end"] {
		p.seen["end"] = true
		if f.Result != fleet.FlashReady && f.EndedAt != nil {
			fmt.Fprintf(p.w, "  %-9s %-10s %s\n", "+"+offset(f, *f.EndedAt), f.Result, f.Reason)
		}
	}
}

func offset(f fleet.Flash, at time.Time) string {
	d := at.Sub(f.RequestedAt)
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func phaseDetail(f fleet.Flash, ph fleet.Phase) string {
	switch ph {
	case fleet.PhaseRequested:
		return string(f.Trigger) + ", ready check " + string(f.ReadyCheck) + ", deadline " + localTime(&f.Deadline)
	case fleet.PhasePower:
		return f.Power
	case fleet.PhaseDone:
		// done counts the data written; the rest of the image was
		// zeroed without sending it, or left as holes.
		t := ""
		if f.BytesWritten > 0 {
			t = human.Bytes(f.BytesWritten) + " of data written"
		}
		if f.TotalBytes > 0 {
			t += ", image " + human.Bytes(f.TotalBytes)
		}
		if f.Rate > 0 {
			t += ", " + human.Bytes(int64(f.Rate)) + "/s"
		}
		return strings.TrimPrefix(t, ", ")
	case fleet.PhaseReady:
		if f.OSAddress != "" {
			return "OS at " + f.OSAddress
		}
	}
	return ""
}

func progressText(f fleet.Flash) string {
	t := human.Bytes(f.BytesWritten) + " written"
	if f.TotalBytes > 0 {
		t += " of " + human.Bytes(f.TotalBytes)
	}
	if f.Rate > 0 {
		t += ", " + human.Bytes(int64(f.Rate)) + "/s"
	}
	return t
}

// phaseTimes is how long each step between the phases reached took:
// "power 0.4s, PXE boot 40.8s, ...".
func phaseTimes(f fleet.Flash) string {
	names := map[fleet.Phase]string{fleet.PhasePower: "power", fleet.PhasePXE: "to PXE", fleet.PhaseFetch: "live env start",
		fleet.PhaseDone: "flash", fleet.PhaseDisk: "to disk boot", fleet.PhaseReady: "to ready"}
	var parts []string
	prev := f.RequestedAt
	for _, ph := range fleet.Phases[1:] {
		at := f.PhaseAt(ph)
		if at == nil {
			continue
		}
		parts = append(parts, names[ph]+" "+at.Sub(prev).Round(100*time.Millisecond).String())
		prev = *at
	}
	return strings.Join(parts, ", ")
}

// readyText is the machine's ready check as it applies.
func readyText(m api.Machine) string {
	eff := m.ReadyCheck.Effective(m.ProvisioningMode)
	if m.ReadyCheck == fleet.ReadyDefault {
		return string(eff) + " (default)"
	}
	return string(eff)
}

// flashText sums up a flash in a line.
func flashText(f *fleet.Flash) string {
	if f == nil {
		return "-"
	}
	t := fmt.Sprintf("%d %s (%s, %s, phase %s", f.ID, f.Result, f.Trigger, dash(f.Image), f.Phase)
	if !f.Running() {
		t += ", took " + f.Duration(time.Now()).Round(time.Second).String()
	}
	t += ", requested " + localTime(&f.RequestedAt) + ")"
	if f.Reason != "" {
		t += ": " + f.Reason
	}
	return t
}

func newMachinesHistoryCmd(e *env) *cobra.Command {
	var limit, offset int
	cmd := &cobra.Command{
		Use:   "history MAC [--limit N] [--offset N]",
		Short: "List a machine's flashes, newest first, with their phases and results",
		Long: `Lists the machine's flash attempts, newest first: id, when requested,
trigger (policy: a flash-policy PXE boot; demand: bty-ctl machines
reflash; tui: the interactive live env), image, result (running, ready,
failed, timeout, cancelled), the last phase reached, how long it took,
bytes written (a delta flash adds the bytes fetched and how many of the
image's chunks the disk already held) and why it ended otherwise than
ready. --json gives every
field, each phase's time included.`,
		Example: `  bty-ctl machines history 52:54:00:12:34:56
  bty-ctl machines history 52:54:00:12:34:56 --limit 5 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			const name = "machines-history"
			if limit < 1 || limit > 1000 || offset < 0 {
				return e.fail(name, exitcode.Wrap(exitcode.Usage, errors.New("--limit: 1 to 1000; --offset: 0 or more")), map[string]any{"mac": args[0]})
			}
			mac, c, err := e.macClient(name, args[0])
			if err != nil {
				return err
			}
			page, err := c.Flashes(cmd.Context(), mac, limit, offset)
			if err != nil {
				return e.fail(name, e.apiErr("flash history of "+mac.String(), c, err), map[string]any{"server": c.Server(), "mac": mac})
			}
			if e.asJSON {
				return writeJSON(e, name, map[string]any{"server": c.Server(), "mac": mac, "total": page.Total, "flashes": page.Flashes})
			}
			if len(page.Flashes) == 0 {
				fmt.Fprintf(e.stdout, "%s has no flashes yet\n", mac)
				return nil
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tREQUESTED\tTRIGGER\tIMAGE\tRESULT\tPHASE\tTOOK\tWRITTEN\tREASON")
			now := time.Now()
			for _, f := range page.Flashes {
				written := "-"
				if f.BytesWritten > 0 {
					written = human.Bytes(f.BytesWritten)
				}
				if f.ChunksTotal > 0 { // a delta flash
					written = fmt.Sprintf("%s (fetched %s, %d of %d data chunks equal)", human.Bytes(f.BytesWritten),
						human.Bytes(f.BytesFetched), f.ChunksEqual, f.ChunksTotal-f.ChunksZero)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.ID, localTime(&f.RequestedAt), f.Trigger, dash(f.Image),
					f.Result, f.Phase, f.Duration(now).Round(time.Second), written, dash(f.Reason))
			}
			tw.Flush()
			if shown := offset + len(page.Flashes); shown < page.Total {
				fmt.Fprintf(e.stderr, "%d of %d flashes shown; more with --offset %d\n", len(page.Flashes), page.Total, shown)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "how many flashes to list (1-1000)")
	cmd.Flags().IntVar(&offset, "offset", 0, "skip this many of the newest first")
	return cmd
}
