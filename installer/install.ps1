# gimp-draggan installer for Windows: a thin wrapper that finds Python 3.10+ and runs
# installer\install.py with the same arguments (see `install.ps1 --help`).
#   powershell -ExecutionPolicy Bypass -File installer\install.ps1 [--service] [--cpu] [--dry-run]
$ErrorActionPreference = "Stop"
$script = Join-Path (Split-Path -Parent $MyInvocation.MyCommand.Path) "install.py"

$candidates = @(@("py", "-3"), @("python"), @("python3"))
$python = $null
foreach ($cand in $candidates) {
    $exe = $cand[0]
    $pre = @($cand | Select-Object -Skip 1)
    if (-not (Get-Command $exe -ErrorAction SilentlyContinue)) { continue }
    & $exe @pre -c "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)" 2>$null
    if ($LASTEXITCODE -eq 0) { $python = $cand; break }
}
if ($null -eq $python) {
    Write-Error ("gimp-draggan needs Python 3.10 or newer to install its daemon. Install it " +
        "from https://www.python.org/downloads/windows/ (tick 'Add python.exe to PATH'), " +
        "then run this script again.")
    exit 1
}

$exe = $python[0]
$pre = @($python | Select-Object -Skip 1)
& $exe @pre $script @args
exit $LASTEXITCODE
