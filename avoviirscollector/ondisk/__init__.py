"""What is on disk, as the programs see it: the one place that knows the files' names, formats and readers.

- ``ondisk.sdr``: ``$VIIRS_BASE/sdr`` as a live view (one full pass at start, then inotify: no program lists the
  archive again and again), and the few on-demand passes (an operator's re-queue, the free-space sweep), which look
  at names before they look at files.
- ``ondisk.state``: the name of every file in ``$VIIRS_BASE/state``, its record format, and the read-only readers
  (the download journal's records, the broker's journal replayed without touching it, JSON records, the tail of a
  growing file). The programs that write a file keep their writers; everything that only reads goes through here.
- ``ondisk.usage``: how full the filesystem of ``$VIIRS_BASE`` is, and the size of its top folders but ``sdr/``.
- ``ondisk.log_errors``: the newest ERROR / CRITICAL lines of ``log/*.log``.
"""
