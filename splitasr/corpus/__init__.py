"""Corpus builder: synthetic read speech, augmentation, connected digits, manifests."""
