package server

import (
	"net/http"

	"github.com/btyproject/bty/internal/fleet"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are bty-web's Prometheus series.
type metrics struct {
	requests      *prometheus.CounterVec
	pxeContacts   *prometheus.CounterVec
	flashesDone   prometheus.Counter
	flashesFailed prometheus.Counter
	bytesServed   *prometheus.CounterVec
	subscribers   prometheus.Gauge

	discoveriesRefused *prometheus.CounterVec
	cycleConflicts     prometheus.Counter
	cycleRefused       *prometheus.CounterVec
	powerActions       *prometheus.CounterVec
	recoverySteps      *prometheus.CounterVec
	flashDuration      *prometheus.HistogramVec
	// The chunk stores' (chunkstores.go).
	chunkBuilds     *prometheus.CounterVec
	chunkBuildBytes prometheus.Gauge
	chunkStores     prometheus.Gauge
	// The schedule runner's (schedulerun.go).
	scheduleFires, scheduleSkips prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		pxeContacts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_pxe_contacts_total", Help: "PXE contacts (GET /pxe/{mac}) by the boot policy served.",
		}, []string{"policy"}),
		flashesDone: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bty_flashes_done_total", Help: "Flashes reported done (POST /pxe/{mac}/done).",
		}),
		flashesFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bty_flashes_failed_total", Help: "Flashes reported failed (POST /pxe/{mac}/failed).",
		}),
		bytesServed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_bytes_served_total", Help: "Bytes of images and boot artifacts served, by kind.",
		}, []string{"kind"}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bty_sse_subscribers", Help: "Clients connected to GET /events/machines.",
		}),
		discoveriesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_discoveries_refused_total",
			Help: "PXE contacts of unknown machines served the discovery boot but not recorded, by reason: rate (the client address's discovery rate) or cap (too many unclaimed discovered machines).",
		}, []string{"reason"}),
		cycleConflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bty_pxe_conflicts_total",
			Help: "PXE contacts for a machine in an open flash cycle from another address than the cycle's: served the local disk, nothing changed.",
		}),
		cycleRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_cycle_calls_refused_total",
			Help: "Live env calls (user-data, meta-data, done, failed) refused because they did not carry the machine's open flash cycle's token from its address, by call.",
		}, []string{"call"}),
		powerActions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_power_actions_total",
			Help: "Power actions through a machine's BMC (POST /machines/{mac}/power, and a reflash's power cycle), by driver and result: ok, credentials, unreachable, error.",
		}, []string{"driver", "result"}),
		recoverySteps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_recovery_steps_total",
			Help: "Steps of failure recovery, by step: failure, power-cycle, reflash, backoff, recovered, quarantine, cancelled, cleared.",
		}, []string{"step"}),
		flashDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "bty_flash_duration_seconds",
			Help:    "Flashes from their request (or the PXE contact that started them) to their end, by result: ready, failed, timeout, cancelled.",
			Buckets: []float64{60, 120, 180, 300, 450, 600, 900, 1200, 1800, 2700, 3600, 7200},
		}, []string{"result"}),
		chunkBuilds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bty_chunk_builds_total", Help: "Chunk store builds of the images (GET /images/{name}/chunks), by result: ok, failed.",
		}, []string{"result"}),
		chunkBuildBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bty_chunk_build_bytes", Help: "Decoded bytes chunked so far by the chunk store build in progress (0: none).",
		}),
		chunkStores: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bty_chunk_stores", Help: "Chunk stores ready to serve.",
		}),
	}
	reg.MustRegister(m.requests, m.pxeContacts, m.flashesDone, m.flashesFailed, m.bytesServed, m.subscribers, m.discoveriesRefused,
		m.cycleConflicts, m.cycleRefused, m.powerActions, m.flashDuration, m.recoverySteps,
		m.chunkBuilds, m.chunkBuildBytes, m.chunkStores,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, p := range []string{"local", "flash", "tui"} {
		m.pxeContacts.WithLabelValues(p)
	}
	for _, r := range []string{refusedRate, refusedCap} {
		m.discoveriesRefused.WithLabelValues(r)
	}
	for _, r := range fleet.FlashResults[1:] {
		m.flashDuration.WithLabelValues(string(r))
	}
	for _, c := range []string{"user-data", "meta-data", "done", "failed", "progress", "ready"} {
		m.cycleRefused.WithLabelValues(c)
	}
	for _, r := range []string{"ok", "failed"} {
		m.chunkBuilds.WithLabelValues(r)
	}
	for _, k := range []string{"image", "boot", "chunks"} {
		m.bytesServed.WithLabelValues(k)
	}
	m.scheduleFires, m.scheduleSkips = newScheduleMetrics(reg)
	return m
}

func metricsHandler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
