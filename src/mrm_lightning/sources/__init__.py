"""Readers of real preference data; each yields validated PreferenceRecords."""
