package server

import (
	"fmt"
	"html"
	"html/template"
	"strconv"
	"strings"
	"time"

	"github.com/btyproject/bty/internal/fleet"
)

// The dashboard's chart of flash durations: inline SVG written here, on
// the server (the CSP allows no inline script and the UI loads no chart
// library; a scatter plot of a few thousand points is a few lines of
// text). Colours come from app.css by class; each result also has its
// own marker shape, so the chart reads without colour.

// The chart's geometry, in SVG user units (the viewBox; CSS scales it).
const (
	chartW, chartH        = 720, 290
	chartLeft, chartRight = 56, 16
	chartTop, chartBottom = 16, 70
	chartPlotW            = chartW - chartLeft - chartRight
	chartPlotH            = chartH - chartTop - chartBottom
)

// chartResults are the results the chart plots (a running flash has no
// duration yet), in legend order.
var chartResults = []fleet.FlashResult{fleet.FlashReady, fleet.FlashFailed, fleet.FlashTimeout, fleet.FlashCancelled}

// chartMarker is the shape of a result's points, centred on 0,0.
var chartMarker = map[fleet.FlashResult]string{
	fleet.FlashReady:     `<circle r="4"/>`,
	fleet.FlashFailed:    `<rect x="-4" y="-4" width="8" height="8"/>`,
	fleet.FlashTimeout:   `<path d="M0,-5L5,4L-5,4Z"/>`,
	fleet.FlashCancelled: `<path d="M-4,-4L4,4M4,-4L-4,4"/>`,
}

// chartScales are the tops the duration axis may take, in minutes: each
// splits into 4 round steps (the axis's ticks).
var chartScales = []float64{1, 2, 4, 8, 12, 20, 40, 60, 80, 120, 180, 240, 360, 480, 720, 1440, 2880}

// chartYMax is the duration axis's top for a longest duration of
// maxMin minutes: the first scale that holds it.
func chartYMax(maxMin float64) float64 {
	for _, s := range chartScales {
		if maxMin <= s {
			return s
		}
	}
	return chartScales[len(chartScales)-1]
}

// flashChart is the SVG chart of the flashes fs that ended, requested
// from from to to: one marker per flash (x: when requested, y: how long
// it took, in minutes; shape and class by result), with axes, a legend
// with each result's count, and a <title> per marker for a tooltip.
// Without such flashes it is a short paragraph saying so.
func flashChart(fs []fleet.Flash, from, to time.Time) template.HTML {
	type point struct {
		f   fleet.Flash
		min float64
	}
	var pts []point
	counts := map[fleet.FlashResult]int{}
	maxMin := 0.0
	running := 0
	for _, f := range fs {
		if f.RequestedAt.Before(from) || f.RequestedAt.After(to) {
			continue
		}
		if _, ok := chartMarker[f.Result]; !ok || f.EndedAt == nil {
			if f.Running() {
				running++
			}
			continue
		}
		m := max(f.Duration(to).Minutes(), 0)
		pts = append(pts, point{f, m})
		counts[f.Result]++
		maxMin = max(maxMin, m)
	}
	if len(pts) == 0 {
		msg := "No flash ended in the last 4 weeks."
		if running > 0 {
			msg += fmt.Sprintf(" %d in progress.", running)
		}
		return template.HTML(`<p id="flash-chart-empty" class="never">` + html.EscapeString(msg) + `</p>`)
	}
	yMax := chartYMax(maxMin)
	span := to.Sub(from).Seconds()
	num := func(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }
	xOf := func(t time.Time) float64 { return chartLeft + chartPlotW*t.Sub(from).Seconds()/span }
	yOf := func(m float64) float64 { return chartTop + chartPlotH*(1-min(m, yMax)/yMax) }

	var b strings.Builder
	var summary []string
	for _, r := range chartResults {
		summary = append(summary, fmt.Sprintf("%d %s", counts[r], r))
	}
	desc := fmt.Sprintf("%d flashes from %s to %s: %s", len(pts), from.UTC().Format("2006-01-02"), to.UTC().Format("2006-01-02"), strings.Join(summary, ", "))
	if running > 0 {
		desc += fmt.Sprintf("; %d in progress, not shown", running)
	}
	fmt.Fprintf(&b, `<svg id="flash-chart" class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" role="img" aria-labelledby="flash-chart-title flash-chart-desc">`, chartW, chartH)
	b.WriteString(`<title id="flash-chart-title">Flash durations and results, last 4 weeks</title>`)
	fmt.Fprintf(&b, `<desc id="flash-chart-desc">%s.</desc>`, html.EscapeString(desc))

	// The duration axis: 4 steps with grid lines.
	b.WriteString(`<g class="axis axis-y">`)
	for i := 0; i <= 4; i++ {
		v := yMax * float64(i) / 4
		y := num(yOf(v))
		fmt.Fprintf(&b, `<line class="grid-line" x1="%d" x2="%d" y1="%s" y2="%s"/>`, chartLeft, chartLeft+chartPlotW, y, y)
		fmt.Fprintf(&b, `<text x="%d" y="%s" text-anchor="end" dominant-baseline="middle">%s</text>`, chartLeft-6, y, strconv.FormatFloat(v, 'g', 4, 64))
	}
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d"/>`, chartLeft, chartLeft, chartTop, chartTop+chartPlotH)
	fmt.Fprintf(&b, `<text class="axis-label" transform="translate(14,%d) rotate(-90)" text-anchor="middle">Duration (minutes)</text>`, chartTop+chartPlotH/2)
	b.WriteString(`</g>`)

	// The time axis: a tick a week.
	b.WriteString(`<g class="axis axis-x">`)
	fmt.Fprintf(&b, `<line x1="%d" x2="%d" y1="%d" y2="%d"/>`, chartLeft, chartLeft+chartPlotW, chartTop+chartPlotH, chartTop+chartPlotH)
	for t := from; !t.After(to); t = t.Add(7 * 24 * time.Hour) {
		x := num(xOf(t))
		fmt.Fprintf(&b, `<line x1="%s" x2="%s" y1="%d" y2="%d"/>`, x, x, chartTop+chartPlotH, chartTop+chartPlotH+4)
		fmt.Fprintf(&b, `<text x="%s" y="%d" text-anchor="middle">%s</text>`, x, chartTop+chartPlotH+16, t.UTC().Format("Jan 2"))
	}
	fmt.Fprintf(&b, `<text class="axis-label" x="%d" y="%d" text-anchor="middle">Requested (UTC)</text>`, chartLeft+chartPlotW/2, chartTop+chartPlotH+32)
	b.WriteString(`</g>`)

	// The points.
	b.WriteString(`<g class="points">`)
	for _, p := range pts {
		f := p.f
		who := f.MAC.String()
		if f.Hostname != "" {
			who = f.Hostname + " (" + who + ")"
		}
		tip := fmt.Sprintf("%s: flash %d of %s, %s, %s in %s", f.RequestedAt.UTC().Format("2006-01-02 15:04 UTC"), f.ID, who, f.Image, f.Result, shortDuration(f.Duration(to)))
		if f.Result != fleet.FlashReady {
			tip += " (phase " + string(f.Phase) + ")"
		}
		fmt.Fprintf(&b, `<g class="pt pt-%s" data-flash="%d" transform="translate(%s,%s)"><title>%s</title>%s</g>`,
			f.Result, f.ID, num(xOf(f.RequestedAt)), num(yOf(p.min)), html.EscapeString(tip), chartMarker[f.Result])
	}
	b.WriteString(`</g>`)

	// The legend, under the time axis.
	b.WriteString(`<g class="legend">`)
	for i, r := range chartResults {
		x := chartLeft + 8 + i*150
		y := chartH - 10
		fmt.Fprintf(&b, `<g class="legend-item pt-%s" transform="translate(%d,%d)">%s</g>`, r, x, y-4, chartMarker[r])
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s (%d)</text>`, x+10, y, r, counts[r])
	}
	b.WriteString(`</g></svg>`)
	return template.HTML(b.String())
}
