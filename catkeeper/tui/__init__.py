"""The TUI's controllers: one module per feature, each behind the narrow :class:`Host`
interface the app gives it (fleet, clock, notices, screens, the selected VMs), so the app
itself is only wiring. Every controller acts on commands of :mod:`catkeeper.commands`,
routed to it by :class:`catkeeper.tui.dispatch.Dispatcher`."""
