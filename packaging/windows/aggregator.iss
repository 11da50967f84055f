; Inno Setup 6 script for Windows (NOT built here). From the repository root, after
; packaging\windows\aggregator.spec has made dist\aggregator\:
;   iscc /DVersion=0.1.0 packaging\windows\aggregator.iss    -> dist\data-aggregator-0.1.0-setup.exe
; Installs the bundle under Program Files, a Start menu entry for the desktop app, `aggregator` on
; the PATH, and the "DataAggregator" service (app/winservice.py), started automatically, restarted
; by the Service Control Manager when it fails (as Restart=on-failure on Linux).

#ifndef Version
  #define Version "0.1.0"
#endif

[Setup]
AppId={{6A0E3F0B-7C39-4C8E-9D3B-1F4C2B7A9E51}
AppName=Data Aggregator
AppVersion={#Version}
AppPublisher=Data Aggregator maintainers
DefaultDirName={autopf}\Data Aggregator
DefaultGroupName=Data Aggregator
DisableProgramGroupPage=yes
OutputDir=..\..\dist
OutputBaseFilename=data-aggregator-{#Version}-setup
SetupIconFile=aggregator.ico
UninstallDisplayIcon={app}\aggregator-gui.exe
Compression=lzma2/max
SolidCompression=yes
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
PrivilegesRequired=admin
ChangesEnvironment=yes

[Tasks]
Name: "service"; Description: "Run the Data Aggregator service (aggregator serve) at start-up"; Flags: checkedonce
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; Flags: unchecked

[Files]
Source: "..\..\dist\aggregator\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Dirs]
; The service's data (app/winservice.py default_data_dir): kept on uninstall.
Name: "{commonappdata}\DataAggregator"; Flags: uninsneveruninstall

[Icons]
Name: "{group}\Data Aggregator"; Filename: "{app}\aggregator-gui.exe"
Name: "{autodesktop}\Data Aggregator"; Filename: "{app}\aggregator-gui.exe"; Tasks: desktopicon

[Registry]
Root: HKLM; Subkey: "SYSTEM\CurrentControlSet\Control\Session Manager\Environment"; ValueType: expandsz; \
    ValueName: "Path"; ValueData: "{olddata};{app}"; Check: NeedsAddPath(ExpandConstant('{app}'))

[Run]
Filename: "{app}\aggregator-service.exe"; Parameters: "--startup auto install"; Flags: runhidden; Tasks: service
; Recovery: restart 5 s after each failure (the first three), reset the count after a day.
Filename: "{sys}\sc.exe"; Parameters: "failure DataAggregator reset= 86400 actions= restart/5000/restart/5000/restart/5000"; Flags: runhidden; Tasks: service
Filename: "{app}\aggregator-service.exe"; Parameters: "start"; Flags: runhidden; Tasks: service
Filename: "{app}\aggregator-gui.exe"; Description: "Start Data Aggregator"; Flags: nowait postinstall skipifsilent

[UninstallRun]
Filename: "{app}\aggregator-service.exe"; Parameters: "stop"; Flags: runhidden; RunOnceId: "StopService"
Filename: "{app}\aggregator-service.exe"; Parameters: "remove"; Flags: runhidden; RunOnceId: "RemoveService"

[Code]
function NeedsAddPath(Dir: string): Boolean;
var
  Paths: string;
begin
  if not RegQueryStringValue(HKLM, 'SYSTEM\CurrentControlSet\Control\Session Manager\Environment', 'Path', Paths) then
  begin
    Result := True;
    exit;
  end;
  Result := Pos(';' + Uppercase(Dir) + ';', ';' + Uppercase(Paths) + ';') = 0;
end;
