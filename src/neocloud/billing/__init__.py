"""Billing: facts, the versioned price book, rating and invoices (DESIGN §3 Billing)."""
