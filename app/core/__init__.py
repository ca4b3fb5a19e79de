"""Pure rules and types: ticks, instruments, validation, best price, quality. No I/O, no faust."""
