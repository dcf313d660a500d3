"""The ReasonSeg release builder: OpenImages and ScanNet v2 sources → the release folder; import of the public
release; candidate worksheets."""
