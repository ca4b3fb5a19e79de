"""Dukascopy historical ticks: the .bi5 reader and the batch importer."""
