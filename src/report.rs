//! Self-contained HTML reports (`scorecard fit --html`, `replay --html`): one file with its data
//! as JSON and a small script that draws every chart as SVG when the page opens — no network,
//! no library. Each chart's `<svg>` gets `data-drawn="1"` once drawn (what the browser test
//! checks).

use serde::Serialize;

/// One series of a chart.
#[derive(Clone, Debug, Serialize)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// (x, y) points; for bar charts x is the bar's index.
    pub points: Vec<(f64, f64)>,
}

/// A chart to draw.
#[derive(Clone, Debug, Serialize)]
pub struct Chart {
    /// Id (the `data-chart` attribute).
    pub id: String,
    /// Title above it.
    pub title: String,
    /// `line` or `bars`.
    pub kind: &'static str,
    /// The x axis's label.
    pub x_label: String,
    /// The y axis's label.
    pub y_label: String,
    /// Bar labels (bar charts), by index.
    pub labels: Vec<String>,
    /// The series.
    pub series: Vec<Series>,
}

/// HTML-escapes text.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An HTML table from a header and rows of already-escaped cells.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut s = String::from("<table><thead><tr>");
    for h in header {
        s.push_str(&format!("<th>{}</th>", escape(h)));
    }
    s.push_str("</tr></thead><tbody>");
    for r in rows {
        s.push_str("<tr>");
        for c in r {
            s.push_str(&format!("<td>{c}</td>"));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

/// At most `n` points of a curve, evenly picked, first and last kept.
pub fn thin(points: Vec<(f64, f64)>, n: usize) -> Vec<(f64, f64)> {
    if points.len() <= n || n < 2 {
        return points;
    }
    let step = (points.len() - 1) as f64 / (n - 1) as f64;
    (0..n)
        .map(|i| points[((i as f64 * step).round() as usize).min(points.len() - 1)])
        .collect()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;margin:8px 0 16px}\
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}th{background:#f3f3f3}\
.charts{display:flex;flex-wrap:wrap;gap:18px}.chart{border:1px solid #ddd;padding:8px}\
.chart h3{font-size:14px;margin:0 0 4px}svg text{font-size:11px;fill:#333}.summary td:first-child{text-align:left}";

const SCRIPT: &str = r#"
(function(){
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var colors = ['#1f77b4','#d62728','#2ca02c','#ff7f0e','#9467bd','#8c564b'];
  var NS = 'http://www.w3.org/2000/svg';
  function el(name, attrs, parent){var e=document.createElementNS(NS,name);for(var k in attrs)e.setAttribute(k,attrs[k]);if(parent)parent.appendChild(e);return e;}
  function fmt(v){var a=Math.abs(v);return a>=1000?v.toFixed(0):a>=10?v.toFixed(1):v.toFixed(2);}
  data.charts.forEach(function(c){
    var svg=document.querySelector('svg[data-chart="'+c.id+'"]');
    if(!svg)return;
    var W=480,H=300,L=52,R=12,T=12,B=48;
    var xs=[],ys=[0];
    c.series.forEach(function(s){s.points.forEach(function(p){xs.push(p[0]);ys.push(p[1]);});});
    if(c.kind==='bars'){xs=[-0.5,Math.max(0,c.labels.length-0.5)];}
    var x0=Math.min.apply(null,xs),x1=Math.max.apply(null,xs),y0=Math.min.apply(null,ys),y1=Math.max.apply(null,ys);
    if(x1===x0)x1=x0+1;if(y1===y0)y1=y0+1;
    function X(v){return L+(v-x0)/(x1-x0)*(W-L-R);} function Y(v){return H-B-(v-y0)/(y1-y0)*(H-T-B);}
    el('line',{x1:L,y1:H-B,x2:W-R,y2:H-B,stroke:'#888'},svg);
    el('line',{x1:L,y1:T,x2:L,y2:H-B,stroke:'#888'},svg);
    for(var i=0;i<=4;i++){var v=y0+(y1-y0)*i/4;el('text',{x:4,y:Y(v)+4},svg).textContent=fmt(v);
      el('line',{x1:L,y1:Y(v),x2:W-R,y2:Y(v),stroke:'#eee'},svg);}
    if(c.kind!=='bars'){for(var j=0;j<=4;j++){var u=x0+(x1-x0)*j/4;el('text',{x:X(u)-10,y:H-B+14},svg).textContent=fmt(u);}}
    el('text',{x:L+(W-L-R)/2-40,y:H-6},svg).textContent=c.x_label;
    el('text',{x:L+4,y:T+10},svg).textContent=c.y_label;
    var n=c.series.length;
    c.series.forEach(function(s,k){
      var color=colors[k%colors.length];
      if(c.kind==='bars'){
        var bw=(W-L-R)/Math.max(1,c.labels.length)/(n+0.5);
        s.points.forEach(function(p){var x=X(p[0])-bw*n/2+bw*k;
          el('rect',{x:x,y:Math.min(Y(p[1]),Y(0)),width:Math.max(1,bw-1),height:Math.abs(Y(0)-Y(p[1])),fill:color,'class':'bar'},svg);});
      } else {
        el('polyline',{points:s.points.map(function(p){return X(p[0])+','+Y(p[1]);}).join(' '),fill:'none',stroke:color,'stroke-width':2,'class':'curve'},svg);
      }
      el('rect',{x:W-R-120,y:T+4+k*14,width:10,height:10,fill:color},svg);
      el('text',{x:W-R-106,y:T+13+k*14},svg).textContent=s.name;
    });
    if(c.kind==='bars'){c.labels.forEach(function(l,i){var t=el('text',{x:X(i)-4,y:H-B+14,transform:'rotate(30 '+(X(i)-4)+' '+(H-B+14)+')'},svg);t.textContent=l.length>16?l.slice(0,15)+'…':l;});}
    svg.setAttribute('data-drawn','1');
  });
  document.body.setAttribute('data-charts-drawn', String(document.querySelectorAll('svg[data-drawn="1"]').length));
})();
"#;

/// The whole page: a title, a summary (HTML), the charts, then more HTML (tables).
pub fn page(title: &str, summary: &str, charts: &[Chart], after: &str) -> String {
    let data = serde_json::json!({ "charts": charts })
        .to_string()
        .replace("</", "<\\/");
    let mut s = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1>{summary}<div class=\"charts\">",
        t = escape(title)
    );
    for c in charts {
        s.push_str(&format!(
            "<div class=\"chart\"><h3>{}</h3><svg data-chart=\"{}\" width=\"480\" height=\"300\" viewBox=\"0 0 480 300\"></svg></div>",
            escape(&c.title),
            escape(&c.id)
        ));
    }
    s.push_str("</div>");
    s.push_str(after);
    s.push_str(&format!(
        "<script id=\"report-data\" type=\"application/json\">{data}</script><script>{SCRIPT}</script></body></html>"
    ));
    s
}
