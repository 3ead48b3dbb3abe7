"""Models: classifiers (teacher and student builders), student initialisation, (later) LAD gate blocks."""
