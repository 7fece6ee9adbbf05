"""The client agent: session core, full-tunnel routes, kill switch and DNS of `warren connect`."""
