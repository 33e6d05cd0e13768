"""The pure domain: money, commands, events, the wallet decider. No I/O anywhere below here."""
