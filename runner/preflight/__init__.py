"""``runner check``: the go/no-go before the open (what is due, the account's session, its master, the
instruments, the calendar, the order-rate budget), one row per check and account."""
