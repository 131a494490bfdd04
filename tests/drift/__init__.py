"""Tests of the drift core: profiles, histograms (both implementations), statistics, windows."""
